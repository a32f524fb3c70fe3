// Real gateways on loopback for the tests, a WebSocket test client and a fake runtime speaking gRPC.
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Digest, digestOf, encodeManifest, formatDigest, parseDigest, parseManifest } from '@kernelhop/kernel-snapshot';
import { WebSocket } from 'ws';
import type { GatewayConfig } from '../src/config.js';
import { offer, toProtoNames } from '@kernelhop/proto';
import type { Assignment as PbAssignment } from '@kernelhop/proto/grpc-keepcase/Assignment';
import type { Cancel } from '@kernelhop/proto/grpc-keepcase/Cancel';
import type { Digest as PbDigest } from '@kernelhop/proto/grpc-keepcase/Digest';
import { loadProto } from '../src/grpcApi.js';
import { Gateway, GatewayTuning, startGateway } from '../src/server.js';
import { readPackIndex } from '../src/stores/packs.js';

export const TOKEN = 'test-token-0123456789';
/** The runtime token of the gateway started last (each test file runs its own process and gateway). */
let runtimeToken = '';

export interface TestGateway {
  gw: Gateway;
  dataDir: string;
  grpcAddress: string;
  /** A runtime token of any class, for the fake runtimes and gRPC calls of the tests. */
  runtimeToken: string;
  stop(): Promise<void>;
}

/** `more`: the gateway's options over the tests' (stores, elastic, ...), and `tuning` over theirs. */
export async function startTestGateway(more: Partial<GatewayConfig> & { tuning?: GatewayTuning } = {}): Promise<TestGateway> {
  const { tuning, ...config } = more;
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kernelhop-gw-'));
  const metadataStore = config.metadataStore ?? (await testPostgres());
  const gw = await startGateway(
    { host: '127.0.0.1', port: 0, grpcPort: 0, dataDir, token: TOKEN, tokenGenerated: false, metadataStore, ...config },
    { heartbeatIntervalMs: 200, missedHeartbeats: 3, cancelGraceMs: 400, log: () => undefined, ...tuning },
  );
  runtimeToken = (await gw.runtimeTokens.create(null, Date.now())).token;
  return {
    gw,
    dataDir,
    grpcAddress: gw.grpcAddress,
    runtimeToken,
    stop: async () => {
      await gw.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * With KERNELHOP_TEST_POSTGRES (a server's URL, no database: postgresSuites.test.ts sets it), each test gateway gets
 * a new database there, so a suite written for the embedded default runs on Postgres as it is.
 */
let testDatabases = 0;
export async function testPostgres(): Promise<GatewayConfig['metadataStore']> {
  const server = process.env.KERNELHOP_TEST_POSTGRES;
  if (server === undefined || server === '') return undefined;
  const name = `gw_${process.pid}_${testDatabases++}`;
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: `${server}/postgres` });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  return { kind: 'postgres', url: `${server}/${name}` };
}

export type Msg = Record<string, unknown>;

/** A WebSocket client that files every reply under its `re`. */
export class TestClient {
  private readonly inbox = new Map<string, Msg[]>();
  private readonly waiters = new Map<string, () => void>();
  private nextId = 1;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      const msg = isBinary ? decodeBinary(data) : (JSON.parse(data.toString('utf8')) as Msg);
      const key = JSON.stringify(msg.re);
      (this.inbox.get(key) ?? this.inbox.set(key, []).get(key) as Msg[]).push(msg);
      this.waiters.get(key)?.();
    });
  }

  static connect(url: string, token = TOKEN): Promise<TestClient> {
    const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new TestClient(ws)));
      ws.once('error', reject);
    });
  }

  id(): string {
    return `r${this.nextId++}`;
  }

  send(msg: Msg): void {
    this.ws.send(JSON.stringify(msg));
  }

  sendRaw(data: string | Buffer, binary: boolean): void {
    this.ws.send(data, { binary });
  }

  /** The next message with this `re`. */
  async next(re: unknown, timeoutMs = 5000): Promise<Msg> {
    const key = JSON.stringify(re);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const q = this.inbox.get(key);
      if (q !== undefined && q.length > 0) return q.shift() as Msg;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message for re=${key} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.set(key, () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Sends a request and returns its (first) reply. */
  async call(msg: Msg): Promise<Msg> {
    const id = this.id();
    this.send({ id, ...msg });
    return this.next(id);
  }

  /** Collects events of `re` until its final reply (one with `ok`). */
  async untilFinal(re: unknown, timeoutMs = 5000): Promise<{ events: Msg[]; final: Msg }> {
    const events: Msg[] = [];
    for (;;) {
      const m = await this.next(re, timeoutMs);
      if ('ok' in m) return { events, final: m };
      events.push(m);
    }
  }

  async putBlobs(blobs: Array<{ digest: string; data: Buffer; codec?: string }>): Promise<Msg> {
    const id = this.id();
    let offset = 0;
    const entries = blobs.map((b) => {
      const e = { digest: b.digest, offset, length: b.data.length, ...(b.codec === undefined ? {} : { codec: b.codec }) };
      offset += b.data.length;
      return e;
    });
    this.sendRaw(binaryFrame({ id, op: 'put_blobs', blobs: entries }, blobs.map((b) => b.data)), true);
    return this.next(id);
  }

  close(): void {
    this.ws.close();
  }
}

export function binaryFrame(header: Msg, parts: Buffer[]): Buffer {
  const head = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(head.length);
  return Buffer.concat([len, head, ...parts]);
}

function decodeBinary(data: Buffer): Msg {
  const n = data.readUInt32BE(0);
  const header = JSON.parse(data.subarray(4, 4 + n).toString('utf8')) as Msg;
  return { ...header, payload: data.subarray(4 + n) };
}

/** Whether the directory store under `dataDir` has `digest`'s bytes on disk, read behind its back: in a pack or as a file. */
export async function onDisk(dataDir: string, digest: string): Promise<boolean> {
  const { hash } = parseDigest(digest);
  const cas = path.join(dataDir, 'cas');
  if (existsSync(path.join(cas, hash.slice(0, 2), hash))) return true;
  for (const name of readdirSync(path.join(cas, 'packs')).filter((n) => n.endsWith('.pack'))) {
    if ((await readPackIndex(path.join(cas, 'packs', name))).entries.some((e) => e.hash === hash)) return true;
  }
  return false;
}

export function blob(text: string): { digest: string; data: Buffer } {
  const data = Buffer.from(text);
  return { digest: formatDigest(digestOf(data)), data };
}

/** A one-group manifest over the given chunks, and its blob. */
export function snapshotOf(chunks: Array<{ digest: string; data: Buffer }>): { digest: string; data: Buffer } {
  const size = chunks.reduce((n, c) => n + c.data.length, 0);
  const manifest = parseManifest({
    kind: 'kernelhop.snapshot',
    version: 1,
    groups: [{ names: ['x'], types: { x: 'builtins.bytes' }, pickle: { size, chunks: chunks.map((c) => c.digest) }, buffers: [] }],
    unpicklable: {},
    meta: { created: '2026-11-27T20:00:00Z', python: '3.11.7', parent: null },
  });
  const data = encodeManifest(manifest);
  return { digest: formatDigest(digestOf(data)), data };
}

export type { PbDigest };
/** An Assignment as the gateway sends it: it always names the snapshot. */
export type Assignment = PbAssignment & { snapshot: PbDigest };

/** A GatewayMessage as grpc-js hands it over (keepCase, `kind` naming the oneof field set). */
export type GatewayMsg = { kind: 'assign'; assign: Assignment } | { kind: 'cancel'; cancel: Cancel };

/** The hello every test runtime sends with Register: the schema's default capabilities. */
export const RUNTIME_HELLO = toProtoNames(offer([]));

type UnaryFn<Req, Res> = (req: Req, md: grpc.Metadata, cb: (e: grpc.ServiceError | null, res: Res) => void) => void;

export function grpcClients(address: string): {
  runtimes: grpc.Client & Record<string, UnaryFn<Msg, Msg> & ((md: grpc.Metadata) => grpc.ClientDuplexStream<Msg, GatewayMsg>)>;
  cas: grpc.Client & Record<string, UnaryFn<Msg, Msg>>;
} {
  const v1 = loadProto();
  const creds = grpc.credentials.createInsecure();
  return {
    runtimes: new v1.Runtimes(address, creds) as never,
    cas: new v1.ContentAddressableStorage(address, creds) as never,
  };
}

export function meta(token = runtimeToken, runtimeId?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  if (runtimeId !== undefined) md.set('runtime-id', runtimeId);
  return md;
}

/** A unary call; Register carries the runtime's hello unless the request states capabilities itself. */
export function unary<Res = Msg>(client: Record<string, unknown>, method: string, req: Msg, md = meta()): Promise<Res> {
  if (method === 'Register' && !('capabilities' in req)) req = { ...req, capabilities: RUNTIME_HELLO };
  return new Promise((resolve, reject) => {
    (client[method] as UnaryFn<Msg, Res>).call(client, req, md, (e, res) => (e ? reject(e) : resolve(res)));
  });
}

/** A runtime of our own: registers, opens Work, and lets the test answer each assignment. */
export class FakeRuntime {
  id = '';
  private stream?: grpc.ClientDuplexStream<Msg, GatewayMsg>;
  private heartbeat?: NodeJS.Timeout;
  readonly received: GatewayMsg[] = [];
  private waiters: Array<() => void> = [];
  readonly clients: ReturnType<typeof grpcClients>;

  constructor(
    address: string,
    private readonly opts: { name: string; classes: string[]; capacity: number; token?: string },
  ) {
    this.clients = grpcClients(address);
  }

  private md(withId = false): grpc.Metadata {
    return meta(this.opts.token ?? runtimeToken, withId ? this.id : undefined);
  }

  async start(): Promise<void> {
    const res = await unary<{ runtime_id: string }>(this.clients.runtimes, 'Register', {
      name: this.opts.name,
      classes: this.opts.classes.map((name) => ({ name, simulated: true })),
      capacity: this.opts.capacity,
      version: 'test',
    }, this.md());
    this.id = res.runtime_id;
    this.heartbeat = setInterval(() => {
      unary(this.clients.runtimes, 'Heartbeat', { runtime_id: this.id, busy: 0, warm_workers: 0 }, this.md()).catch(() => undefined);
    }, 100);
    this.stream = this.clients.runtimes.Work(this.md(true));
    this.stream.on('data', (m: GatewayMsg) => {
      this.received.push(m);
      for (const w of this.waiters.splice(0)) w();
    });
    this.stream.on('error', () => undefined);
    // The gateway attaches Work when its headers arrive; a heartbeat sent after them on the same connection
    // returns after that has happened.
    await unary(this.clients.runtimes, 'Heartbeat', { runtime_id: this.id, busy: 0, warm_workers: 0 }, this.md());
    await new Promise((r) => setTimeout(r, 20));
  }

  /** A CAS call as this runtime (its token and runtime-id). */
  cas<Res = Msg>(method: string, req: Msg): Promise<Res> {
    return unary<Res>(this.clients.cas, method, req, this.md(true));
  }

  /** The next message of the given kind (consumed). */
  async nextMessage<K extends GatewayMsg['kind']>(kind: K, timeoutMs = 5000): Promise<Extract<GatewayMsg, { kind: K }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.received.findIndex((m) => m.kind === kind);
      if (i >= 0) return this.received.splice(i, 1)[0] as Extract<GatewayMsg, { kind: K }>;
      if (Date.now() > deadline) throw new Error(`fake runtime got no ${kind} within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  event(runId: string, ev: Msg): void {
    this.stream?.write({ event: { run_id: runId, ...ev } });
  }

  /** Says which of its slots runs of other gateways hold ("Several gateways"). */
  slotsTaken(slots: number[]): void {
    this.stream?.write({ slots_taken: { slots } });
  }

  /** Ends the Work stream as a crashing runtime would. */
  crash(): void {
    clearInterval(this.heartbeat);
    this.stream?.cancel();
  }

  stopHeartbeats(): void {
    clearInterval(this.heartbeat);
  }

  close(): void {
    clearInterval(this.heartbeat);
    this.stream?.cancel();
    this.clients.runtimes.close();
    this.clients.cas.close();
  }
}

export function pbDigest(d: Digest): PbDigest {
  return { hash: d.hash, size_bytes: d.sizeBytes };
}
