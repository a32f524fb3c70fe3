// A real S3-compatible server for the tests: moto's standalone server (moto[server], from the test extra) on
// loopback, behind a counting proxy of ours that can also inject faults (a 503, a HEAD that misses). moto rather
// than s3rver: moto is maintained and implements what the store relies on (If-None-Match: * on PutObject and
// CompleteMultipartUpload, multipart, ListMultipartUploads, SigV4 presigned GETs); s3rver's last release (2021)
// predates S3's conditional writes. MinIO does not install here.
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';

export interface SeenRequest {
  method: string;
  url: string;
  /** A presigned URL carries its signature in the query; the SDK's own requests sign in a header. */
  presigned: boolean;
  status: number;
}

export interface S3TestServer {
  /** The proxy's URL: give this as --s3-endpoint. */
  endpoint: string;
  /** moto itself, bypassing the proxy. */
  motoEndpoint: string;
  requests: SeenRequest[];
  /** Answer the next `n` requests with 503 SlowDown (the SDK must retry them). */
  failNext(n: number): void;
  /** Answer HEADs of keys ending in `suffix` with 404, as if the object were not there yet (a put racing another). */
  hideFromHead(suffix: string | null): void;
  createBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

/** moto_server from PATH or next to the test Python (scripts/test.sh installs the test extra into .venv). */
function motoServerBinary(): string {
  const candidates = [
    ...(process.env.KERNELHOP_PYTHON ? [path.join(path.dirname(process.env.KERNELHOP_PYTHON), 'moto_server')] : []),
    path.resolve(__dirname, '..', '..', '..', '.venv', 'bin', 'moto_server'),
    ...(process.env.PATH ?? '').split(path.delimiter).map((d) => path.join(d, 'moto_server')),
  ];
  const found = candidates.find((c) => existsSync(c));
  if (found === undefined) {
    throw new Error('moto_server not found: install the test extra (pip install -e ".[test]", which brings moto[server])');
  }
  return found;
}

async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Standard variables the AWS SDK reads, as a deployment sets them; moto accepts any key. */
export function setTestCredentials(): void {
  process.env.AWS_ACCESS_KEY_ID = 'kernelhop-test';
  process.env.AWS_SECRET_ACCESS_KEY = 'kernelhop-test-secret';
  process.env.AWS_REGION = 'us-east-1';
}

export async function startS3Server(): Promise<S3TestServer> {
  setTestCredentials();
  const port = await freePort();
  const moto: ChildProcess = spawn(motoServerBinary(), ['-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  moto.stderr?.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));
  const motoEndpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (moto.exitCode !== null) throw new Error(`moto_server exited with ${moto.exitCode}:\n${stderr}`);
    const up = await fetch(`${motoEndpoint}/moto-api/`).then(
      (r) => r.ok,
      () => false,
    );
    if (up) break;
    if (Date.now() > deadline) {
      moto.kill();
      throw new Error(`moto_server did not answer on ${motoEndpoint} within 30 s:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  const requests: SeenRequest[] = [];
  let failing = 0;
  let hidden: string | null = null;
  const agent = new http.Agent({ keepAlive: true });
  const proxy = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const record = (status: number): void => {
      requests.push({ method: req.method ?? '', url, presigned: /[?&]X-Amz-Signature=/.test(url), status });
    };
    if (failing > 0) {
      failing -= 1;
      record(503);
      req.resume();
      res.writeHead(503, { 'Content-Type': 'application/xml' });
      res.end('<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>injected by the test</Message></Error>');
      return;
    }
    if (hidden !== null && req.method === 'HEAD' && url.split('?')[0]!.endsWith(hidden)) {
      record(404);
      req.resume();
      res.writeHead(404);
      res.end();
      return;
    }
    const upstream = http.request(
      { host: '127.0.0.1', port, method: req.method, path: url, headers: req.headers, agent },
      (up) => {
        record(up.statusCode ?? 0);
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', (e) => {
      record(502);
      res.destroy(e);
    });
    req.pipe(upstream);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const endpoint = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;

  return {
    endpoint,
    motoEndpoint,
    requests,
    failNext: (n) => {
      failing = n;
    },
    hideFromHead: (suffix) => {
      hidden = suffix;
    },
    createBucket: async (name) => {
      const client = new S3Client({ endpoint: motoEndpoint, forcePathStyle: true, region: 'us-east-1' });
      await client.send(new CreateBucketCommand({ Bucket: name }));
      client.destroy();
    },
    stop: async () => {
      proxy.closeAllConnections();
      await new Promise<void>((r) => proxy.close(() => r()));
      agent.destroy();
      await new Promise<void>((r) => {
        if (moto.exitCode !== null) return r();
        moto.once('exit', () => r());
        moto.kill('SIGTERM');
      });
    },
  };
}
