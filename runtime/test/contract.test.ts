// The gRPC contract: the same cases against the runtime tests' fake gateway (fakeGateway.ts) and the real gateway
// process, as a runtime sees them. A case that passes on one side only is a fake that lies, or a gateway that changed.
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { PROTOCOL } from '@kernelhop/proto';
import { digestOf } from '@kernelhop/kernel-snapshot';
import { GatewayClient } from '../src/gatewayClient.js';
import { loadKernelhopProto } from '../src/proto.js';
import { FakeGateway } from './fakeGateway.js';
import { REPO, tempDir } from './helpers.js';

interface Peer {
  address: string;
  token: string;
  stop: () => void;
}

async function fake(): Promise<Peer> {
  const gateway = new FakeGateway();
  await gateway.start();
  return { address: gateway.address, token: gateway.token, stop: () => gateway.stop() };
}

/** `node gateway/dist/src/main.js` on free ports, with a runtime token written for us. */
async function realGateway(): Promise<Peer> {
  const data = tempDir('contract-gw');
  const tokenFile = path.join(data, 'runtime-token');
  const main = path.join(REPO, 'gateway', 'dist', 'src', 'main.js');
  if (!fs.existsSync(main)) throw new Error(`the gateway is not built (${main} is missing): run \`npm run build\` first`);
  const proc: ChildProcess = spawn(
    process.execPath,
    [main, '--port', '0', '--grpc-port', '0', '--data', data, '--runtime-token-file', tokenFile],
    { env: { ...process.env, KERNELHOP_TOKEN: 'contract-admin-token', KERNELHOP_HOME: data }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  proc.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const grpcAddress = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.once('exit', (code) => reject(new Error(`gateway exited with ${code}:\n${stderr}`)));
    proc.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /kernelhop gateway ready ws=\S+ grpc=(\S+)/.exec(out);
      if (m) resolve(m[1] as string);
    });
  });
  proc.removeAllListeners('exit');
  const token = fs.readFileSync(tokenFile, 'utf8').trim();
  return { address: grpcAddress, token, stop: () => proc.kill('SIGTERM') };
}

function code(err: unknown): number | undefined {
  return (err as grpc.ServiceError).code;
}

const REGISTER = { name: 'contract-host', classes: [{ name: 'h100', simulated: true }], capacity: 1, version: 'test' };

for (const [name, start] of [['fake', fake], ['gateway', realGateway]] as const) {
  describe(`gRPC contract against the ${name}`, () => {
    let peer: Peer;
    const pkg = loadKernelhopProto();
    const clients: GatewayClient[] = [];
    const client = (token = peer.token): GatewayClient => {
      const c = new GatewayClient(peer.address, token, pkg);
      clients.push(c);
      return c;
    };

    before(async () => {
      peer = await start();
    });
    after(() => {
      for (const c of clients) c.close();
      peer?.stop();
    });

    test('Register answers an id, a heartbeat interval and the capabilities agreed', async () => {
      const c = client();
      const res = await c.register(REGISTER, 10_000, true);
      assert.ok(res.runtimeId);
      assert.ok(res.heartbeatIntervalMs > 0);
      assert.equal(c.agreed.protocol, PROTOCOL);
      assert.ok(c.agreed.maxBatchBytes > 0);
    });

    test('Register without capabilities (a runtime older than the hello) fails with FAILED_PRECONDITION', async () => {
      const raw = new pkg.Runtimes(peer.address, grpc.credentials.createInsecure());
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${peer.token}`);
      const err = await new Promise<unknown>((resolve) =>
        (raw as unknown as { register: (r: unknown, m: grpc.Metadata, cb: (e: unknown) => void) => void }).register(REGISTER, md, resolve),
      );
      raw.close();
      assert.equal(code(err), grpc.status.FAILED_PRECONDITION, String(err));
      assert.match(String((err as grpc.ServiceError).details), /hello/);
    });

    test('a wrong token fails with UNAUTHENTICATED', async () => {
      await assert.rejects(client('wrong-token').register(REGISTER, 10_000, true), (e) => code(e) === grpc.status.UNAUTHENTICATED);
    });

    test('a Heartbeat of a registered runtime is known, of another id is not', async () => {
      const c = client();
      const { runtimeId } = await c.register(REGISTER, 10_000, true);
      assert.equal((await c.heartbeat({ runtimeId })).known, true);
      assert.equal((await c.heartbeat({ runtimeId: 'rt-never-registered' })).known, false);
    });

    test('Work for an unknown runtime id ends with NOT_FOUND', async () => {
      const raw = new pkg.Runtimes(peer.address, grpc.credentials.createInsecure());
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${peer.token}`);
      md.set('runtime-id', 'rt-never-registered');
      const call = (raw as unknown as { work: (m: grpc.Metadata) => grpc.ClientDuplexStream<unknown, unknown> }).work(md);
      const err = await new Promise<unknown>((resolve) => {
        call.on('error', resolve);
        call.on('data', () => undefined);
      });
      raw.close();
      assert.equal(code(err), grpc.status.NOT_FOUND, String(err));
    });

    test('a runtime holding no run finds any blob missing and may not upload', async () => {
      const c = client();
      await c.register(REGISTER, 10_000, true);
      const data = Buffer.from('contract blob');
      const d = digestOf(data);
      const digest = { hash: d.hash, sizeBytes: d.sizeBytes };
      assert.deepEqual((await c.findMissingBlobs([digest])).map((m) => m.hash), [d.hash]);
      await assert.rejects(c.batchUpdateBlobs([{ digest, data }]), (e) => code(e) === grpc.status.PERMISSION_DENIED);
    });

    test('a runtime holding no run reads no blob: each one PERMISSION_DENIED, stored or not', async () => {
      const c = client();
      await c.register(REGISTER, 10_000, true);
      const d = digestOf(Buffer.from('a blob of nobody this runtime serves'));
      const { responses } = await c.batchReadBlobs([{ hash: d.hash, sizeBytes: d.sizeBytes }]);
      assert.equal(responses.length, 1);
      assert.equal(responses[0]?.status?.code, grpc.status.PERMISSION_DENIED, JSON.stringify(responses[0]?.status));
      assert.match(String(responses[0]?.status?.message), /not part of a run assigned to this runtime/);
      assert.equal(responses[0]?.data.length, 0);
    });
  });
}
