// TLS on both listeners: the refusal without it off loopback, the certificates --tls auto makes and keeps, and that
// each listener speaks TLS only.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { WebSocket } from 'ws';
import { ConfigError, loadConfig } from '../src/config.js';
import { loadProto } from '../src/grpcApi.js';
import { startGateway } from '../src/server.js';
import { TOKEN } from './helpers.js';

test('a non-loopback address without TLS is refused, saying how to get TLS; --insecure or TLS allow it', () => {
  assert.throws(
    () => loadConfig(['--host', '0.0.0.0'], {}),
    (e: unknown) => e instanceof ConfigError && /without TLS/.test(e.message) && /--tls auto/.test(e.message) && /--insecure/.test(e.message),
  );
  assert.equal(loadConfig(['--host', '0.0.0.0', '--insecure'], {}).tls?.mode, 'off');
  assert.equal(loadConfig(['--host', '10.1.2.3', '--tls', 'auto'], {}).tls?.mode, 'auto');
  assert.equal(loadConfig(['--host', '::1'], {}).tls?.mode, 'off');
  assert.equal(loadConfig(['--host', '127.0.0.2'], {}).tls?.mode, 'off');
  assert.throws(() => loadConfig(['--tls-cert', 'c.pem'], {}), /go together/);
  assert.throws(() => loadConfig(['--tls', 'yes'], {}), /the one value is auto/);
  assert.throws(() => loadConfig(['--tls-san', 'gw.example'], {}), /add --tls auto/);
});

function plainGrpc(address: string, creds: grpc.ChannelCredentials): Promise<grpc.ServiceError | null> {
  const client = new (loadProto().Runtimes)(address, creds) as unknown as grpc.Client & Record<string, (...a: unknown[]) => void>;
  const md = new grpc.Metadata();
  md.set('authorization', 'Bearer nobody');
  return new Promise((resolve) => {
    client.Heartbeat({ runtime_id: 'x' }, md, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null) => {
      client.close();
      resolve(err);
    });
  });
}

test('--tls auto: a CA and a server certificate under DATA/tls, kept across starts; both listeners speak TLS only', async () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kernelhop-tls-'));
  const config = { host: '127.0.0.1', port: 0, grpcPort: 0, dataDir, token: TOKEN, tokenGenerated: false, tls: { mode: 'auto' as const, names: ['gw.example'] } };
  try {
    const gw = await startGateway(config, { log: () => undefined });
    const caPem = readFileSync(path.join(dataDir, 'tls', 'ca.pem'));
    assert.equal(statSync(path.join(dataDir, 'tls', 'ca-key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(path.join(dataDir, 'tls', 'server-key.pem')).mode & 0o777, 0o600);
    const cert = new X509Certificate(readFileSync(path.join(dataDir, 'tls', 'server.pem')));
    assert.ok(cert.verify(new X509Certificate(caPem).publicKey), 'signed by the CA');
    for (const name of ['DNS:localhost', 'IP Address:127.0.0.1', 'DNS:gw.example', `DNS:${os.hostname()}`]) {
      assert.ok(cert.subjectAltName?.includes(name), `${name} in ${cert.subjectAltName}`);
    }
    assert.equal(gw.tlsFingerprint, cert.fingerprint256);
    assert.match(gw.wsUrl, /^wss:\/\/127\.0\.0\.1:\d+\/ws\/v1$/);
    const discovery = JSON.parse(readFileSync(path.join(dataDir, 'gateway.json'), 'utf8')) as Record<string, string>;
    assert.deepEqual(discovery, { url: gw.wsUrl, grpc: gw.grpcAddress, ca: path.join(dataDir, 'tls', 'ca.pem'), fingerprint: cert.fingerprint256 });

    // WebSocket: verified against the CA it opens; without the CA the certificate is refused; plain ws gets no HTTP.
    const ws = new WebSocket(gw.wsUrl, { ca: caPem, headers: { Authorization: `Bearer ${TOKEN}` } });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.close();
    await assert.rejects(
      new Promise((resolve, reject) => {
        const bad = new WebSocket(gw.wsUrl, { headers: { Authorization: `Bearer ${TOKEN}` } });
        bad.once('open', resolve);
        bad.once('error', reject);
      }),
      /self-signed certificate in certificate chain/,
    );
    const port = Number(new URL(gw.wsUrl).port);
    const plainAnswer = await new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write(`GET /ws/v1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`));
      let got = '';
      s.on('data', (b: Buffer) => (got += b.toString('latin1')));
      s.on('close', () => resolve(got));
      s.on('error', () => resolve(got));
    });
    assert.doesNotMatch(plainAnswer, /HTTP\/1\.1/, 'a plain-text request gets no HTTP answer');

    // gRPC: plain text is refused; TLS with the CA reaches the API (which then refuses the bogus token).
    const plain = await plainGrpc(gw.grpcAddress, grpc.credentials.createInsecure());
    assert.equal(plain?.code, grpc.status.UNAVAILABLE);
    const secure = await plainGrpc(gw.grpcAddress, grpc.credentials.createSsl(caPem));
    assert.equal(secure?.code, grpc.status.UNAUTHENTICATED, String(secure?.details));
    await gw.close();

    const again = await startGateway(config, { log: () => undefined });
    assert.equal(again.tlsFingerprint, cert.fingerprint256, 'the certificate is kept across starts');
    await again.close();

    // The operator's own certificate and key (here the pair made above).
    const own = await startGateway(
      {
        ...config,
        dataDir: path.join(dataDir, 'own'),
        tls: { mode: 'files', certFile: path.join(dataDir, 'tls', 'server.pem'), keyFile: path.join(dataDir, 'tls', 'server-key.pem') },
      },
      { log: () => undefined },
    );
    assert.equal(own.tlsFingerprint, cert.fingerprint256);
    assert.equal((await plainGrpc(own.grpcAddress, grpc.credentials.createSsl(caPem)))?.code, grpc.status.UNAUTHENTICATED);
    await own.close();
    await assert.rejects(
      startGateway(
        { ...config, dataDir: path.join(dataDir, 'bad'), tls: { mode: 'files', certFile: path.join(dataDir, 'tls', 'server.pem'), keyFile: path.join(dataDir, 'tls', 'ca-key.pem') } },
        { log: () => undefined },
      ),
      /is not the private key of the certificate/,
    );
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
