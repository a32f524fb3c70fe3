// The kernel/browser WebSocket API (ARCHITECTURE.md, "Kernel and browser ↔ gateway").
import { createHmac } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { Digest, DigestError, formatDigest, parseDigest } from '@kernelhop/kernel-snapshot';
import { RawData, WebSocket, WebSocketServer } from 'ws';
import { UserBlobView } from './access.js';
import { BlobStore } from './blobStore.js';
import { CODECS, Codec, closeDecoders, decodeBlob, isCodec } from './codecs.js';
import { DISK_FULL_MESSAGE, isDiskFull } from './diskFull.js';
import { RUNTIME_TOKEN_OPS, RuntimeTokenStore, isRuntimeTokenOp, runtimeTokenOp } from './runtimeTokens.js';
import type { Log } from './log.js';
import type { GatewayMetrics } from './metrics.js';
import { POOL_OPS, PoolOps, isPoolOp } from './runs/poolOps.js';
import { RunEvent, RunFinal, RunHandle, RunService } from './runs/runService.js';
import { Scheduler } from './scheduler.js';
import { agree, DEFAULT_LIMITS, fromProtoNames, IncompatiblePeer, offer, toProtoNames } from '@kernelhop/proto';
import { OpError, SNAPSHOT_OPS, SnapshotApi } from './snapshotApi.js';
import { SnapshotStore, User } from './snapshotStore.js';
import type { UsageLedger } from './usage.js';
import { USAGE_OPS, isUsageOp, usageOp } from './usageApi.js';

export const WS_PATH = '/ws/v1';
/** The upload endpoint, under WS_PATH, that the hello names (Capabilities.blob_upload). */
export const BLOB_UPLOAD = 'blobs';
export const BLOB_UPLOAD_PATH = `${WS_PATH}/${BLOB_UPLOAD}`;
// The schema's defaults (proto/kernelhop/v1/capabilities.proto), the one place these limits are written.
export const MAX_PAYLOAD_BYTES = DEFAULT_LIMITS.maxFrameBytes;
/** Largest total of blob bytes one get_blobs answers. */
export const MAX_GET_BYTES = DEFAULT_LIMITS.maxBatchReadBytes;
/** What the gateway offers in the socket's hello. */
export const WS_CAPABILITIES = offer([...CODECS]);
/** Above this many bytes queued on a socket, big replies wait. */
const HIGH_WATER_BYTES = 8 * 1024 * 1024;
/** Largest JSON a text frame or a binary frame's header may be: parsing it blocks the event loop. */
export const MAX_JSON_BYTES = 8 * 1024 * 1024;
/**
 * Most digests one find_missing or get_blobs may name (the kernel asks 10,000 at a time): parsing, checking and
 * answering 100,000 held the event loop for ~0.5 s, and every other user with it.
 */
export const MAX_DIGESTS = 10_000;
/** Requests of one user handled at once, over all its sockets; the rest wait their turn, so no user stalls others. */
export const PER_USER_REQUESTS = 8;
export const OPS = ['hello', 'find_missing', 'put_blobs', 'get_blobs', 'classes', 'run', 'cancel', ...SNAPSHOT_OPS, ...RUNTIME_TOKEN_OPS, ...USAGE_OPS, ...POOL_OPS];
/** Longest notebook path or cell id a run may carry for its usage line. */
const MAX_LABEL_CHARS = 1024;

export interface WsApiOptions {
  /** Users and their tokens; each socket acts as the user whose token opened it. */
  snapshots: SnapshotStore;
  api: SnapshotApi;
  store: BlobStore;
  scheduler: Scheduler;
  /** The owner of every run: the ws layer only validates a run request and routes its events. */
  runs: RunService;
  pool: PoolOps;
  runtimeTokens: RuntimeTokenStore;
  usage: UsageLedger;
  metrics: GatewayMetrics;
  /** Key of the HMAC that makes a user's session name into the session a runtime sees (see `run`). */
  sessionKey: Buffer;
  log: Log;
  pingIntervalMs?: number;
  /** Token → user, where users come from elsewhere too (JupyterHub); default: `snapshots` alone. */
  authenticate?: (token: string) => Promise<User | undefined>;
}

type RequestId = string | number;
type Json = Record<string, unknown>;

/** A request the client got wrong: answered with bad_request, the socket stays open. */
class BadRequest extends Error {}

export class WsApi {
  private readonly wss: WebSocketServer;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly alive = new WeakMap<WebSocket, boolean>();
  private readonly limits = new Map<string, Limiter>();

  constructor(private readonly opts: WsApiOptions) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD_BYTES });
    // Ping every interval; a peer that has not answered the previous ping is gone.
    this.heartbeat = setInterval(() => {
      for (const ws of this.wss.clients) {
        if (this.alive.get(ws) === false) {
          ws.terminate();
          continue;
        }
        this.alive.set(ws, false);
        ws.ping();
      }
    }, opts.pingIntervalMs ?? 15_000);
    this.heartbeat.unref();
  }

  /** For the HTTP server's 'upgrade' event: authenticates (token → user) before any WebSocket exists. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://gateway');
    if (url.pathname !== WS_PATH) {
      rejectUpgrade(socket, 404, 'Not Found', `kernelhop gateway: the WebSocket API is at ${WS_PATH}\n`);
      return;
    }
    this.authenticated(req).then(
      (user) => {
        if (user === undefined) rejectUpgrade(socket, 401, 'Unauthorized', UNAUTHORIZED);
        else this.wss.handleUpgrade(req, socket, head, (ws) => this.connected(ws, user));
      },
      (e: unknown) => {
        this.opts.log(`authentication failed: ${String(e)}`);
        rejectUpgrade(socket, 500, 'Internal Server Error', 'kernelhop gateway: could not check the token\n');
      },
    );
  }

  /**
   * POST BLOB_UPLOAD_PATH: a put_blobs frame's bytes as the body, the frame's reply as the answer. The same op, the
   * same user's scope and turn among its requests, without WebSocket framing (a client masks and copies every
   * byte of a frame it sends: most of an upload's time in the kernel).
   */
  handleUpload(req: IncomingMessage, res: ServerResponse): void {
    const answer = (status: number, body: Json): void => {
      res.writeHead(status, { 'Content-Type': 'application/json', ...(status === 401 ? { 'WWW-Authenticate': 'Bearer' } : {}) });
      res.end(JSON.stringify(body));
    };
    const refuse = (status: number, code: string, message: string): void => answer(status, { ok: false, error: { code, message } });
    if (req.method !== 'POST') return refuse(405, 'bad_request', `${BLOB_UPLOAD_PATH} takes POST: a put_blobs frame's bytes`);
    const length = Number(req.headers['content-length']);
    if (!Number.isSafeInteger(length) || length < 4) {
      return refuse(411, 'bad_request', 'an upload needs a Content-Length: the put_blobs frame it carries');
    }
    if (length > MAX_PAYLOAD_BYTES + MAX_JSON_BYTES) {
      req.resume();
      return refuse(413, 'too_large', `an upload is ${length} bytes; at most ${MAX_PAYLOAD_BYTES} of blobs per request, split it`);
    }
    this.authenticated(req).then(
      async (user) => {
        if (user === undefined) {
          req.resume();
          return refuse(401, 'unauthorized', UNAUTHORIZED.trim());
        }
        const blobs = new UserBlobView(this.opts.store, this.opts.snapshots, user.name);
        // The body is read in the user's turn: at most PER_USER_REQUESTS of one user's uploads are held in memory.
        await this.limiter(user).run(async () => {
          const body = await readBody(req, length);
          if (body === undefined) return refuse(400, 'bad_request', `the upload ended before its ${length} bytes`);
          try {
            const { header, payload } = splitBinary(body);
            if (header.op !== 'put_blobs') throw new BadRequest(`an upload carries put_blobs, not ${JSON.stringify(header.op)}`);
            const results = await storeBlobs(blobs, header, payload, (bytes) => this.opts.metrics.moved('http', 'in', bytes));
            answer(200, { ok: true, results });
          } catch (e) {
            const error = errorOf(e, 'an upload', this.opts.log);
            answer(error.code === 'internal' || error.code === 'disk_full' ? 503 : 400, { ok: false, error });
          }
        });
      },
      (e: unknown) => {
        this.opts.log(`authentication failed: ${String(e)}`);
        refuse(500, 'internal', 'kernelhop gateway: could not check the token');
      },
    );
  }

  private authenticated(req: IncomingMessage): Promise<User | undefined> {
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    const token = bearer?.[1] ?? new URL(req.url ?? '/', 'http://gateway').searchParams.get('token') ?? '';
    if (token === '') return Promise.resolve(undefined);
    return (this.opts.authenticate ?? ((t: string) => this.opts.snapshots.authenticate(t)))(token);
  }

  /** One user's turn among its requests, over all its sockets and uploads. */
  private limiter(user: User): Limiter {
    let limit = this.limits.get(user.name);
    if (limit === undefined) {
      limit = new Limiter(PER_USER_REQUESTS);
      this.limits.set(user.name, limit);
    }
    return limit;
  }

  close(): void {
    clearInterval(this.heartbeat);
    for (const ws of this.wss.clients) ws.close(1001, 'gateway shutting down');
    this.wss.close();
    void closeDecoders();
  }

  private connected(ws: WebSocket, user: User): void {
    this.alive.set(ws, true);
    ws.on('pong', () => this.alive.set(ws, true));
    const conn = new Connection(ws, this.opts, user, this.limiter(user));
    ws.on('message', (data: RawData, isBinary: boolean) => conn.receive(toBuffer(data), isBinary));
    ws.on('close', () => conn.closed());
    ws.on('error', (e) => this.opts.log(`WebSocket error: ${e.message}`));
  }
}

/** One client socket: its user, its requests, its runs, its queue of big replies. */
class Connection {
  /** Request id (JSON-encoded, so 1 and "1" differ) → its run. */
  private readonly runs = new Map<string, RunHandle>();
  /** get_blobs replies go out one at a time so a client cannot pile up many 48 MiB reads. */
  private bigReplies: Promise<void> = Promise.resolve();
  /** The store as this user may see it (per-user scope for dedup: see access.ts). */
  private readonly blobs: UserBlobView;

  constructor(
    private readonly ws: WebSocket,
    private readonly opts: WsApiOptions,
    private readonly user: User,
    private readonly limit: Limiter,
  ) {
    this.blobs = new UserBlobView(opts.store, opts.snapshots, user.name);
  }

  receive(data: Buffer, isBinary: boolean): void {
    let id: RequestId | null = null;
    try {
      const { header, payload } = isBinary ? splitBinary(data) : { header: parseJsonObject(data, 'text frame'), payload: null };
      id = requestId(header.id);
      const rid = id;
      this.limit.run(() => this.dispatch(rid, header, payload)).catch((e: unknown) => this.failed(rid, e));
    } catch (e) {
      this.failed(id, e);
    }
  }

  closed(): void {
    // Nobody is left to receive the results: free the GPUs.
    for (const run of this.runs.values()) run.cancel('the kernel disconnected');
    this.runs.clear();
  }

  private async dispatch(id: RequestId, req: Json, payload: Buffer | null): Promise<void> {
    const op = req.op;
    if (typeof op !== 'string' || !OPS.includes(op)) {
      throw new BadRequest(`unknown op ${JSON.stringify(op)}; expected one of ${OPS.join(', ')}`);
    }
    if (op === 'put_blobs') {
      if (payload === null) throw new BadRequest('put_blobs must be a binary frame: [u32 BE N][N bytes JSON header][payload]');
      await this.putBlobs(id, req, payload);
      return;
    }
    if (payload !== null) throw new BadRequest(`${op} must be a text frame; only put_blobs is binary`);
    switch (op) {
      case 'find_missing': {
        const missing = await this.blobs.findMissing(digestList(req.digests, 'digests'));
        this.send({ re: id, ok: true, missing: missing.map(formatDigest) });
        return;
      }
      case 'get_blobs': {
        const digests = digestList(req.digests, 'digests');
        const total = digests.reduce((n, d) => n + d.sizeBytes, 0);
        if (total > MAX_GET_BYTES) {
          this.send({
            re: id,
            ok: false,
            error: {
              code: 'too_large',
              message: `get_blobs asks for ${total} bytes; at most ${MAX_GET_BYTES} per request, split it`,
            },
          });
          return;
        }
        const turn = this.bigReplies.then(() => this.getBlobs(id, digests));
        this.bigReplies = turn.catch(() => undefined);
        await turn;
        return;
      }
      case 'hello': {
        // The client's limits against ours: it obeys the smaller; ours are enforced here whatever it says.
        try {
          const agreed = agree(WS_CAPABILITIES, fromProtoNames(req.capabilities), 'this client');
          agreed.blobUpload = BLOB_UPLOAD;
          this.send({ re: id, ok: true, capabilities: toProtoNames(agreed) });
        } catch (e) {
          if (!(e instanceof IncompatiblePeer)) throw e;
          this.send({ re: id, ok: false, error: { code: 'incompatible', message: e.message } });
        }
        return;
      }
      case 'classes':
        this.send({ re: id, ok: true, classes: this.opts.scheduler.classes() });
        return;
      case 'run':
        await this.run(id, req);
        return;
      case 'cancel': {
        const target = req.run;
        if (typeof target !== 'string' && typeof target !== 'number') {
          throw new BadRequest('cancel needs "run": the id of the run request');
        }
        // Cancelling a run that already ended is not an error: the two cross on the wire.
        this.runs.get(JSON.stringify(target))?.cancel();
        this.send({ re: id, ok: true });
        return;
      }
      default: {
        if (isUsageOp(op)) {
          this.send({ re: id, ok: true, ...(await usageOp(this.opts.usage, this.user, req)) });
          return;
        }
        if (isPoolOp(op)) {
          this.send({ re: id, ok: true, ...(await this.opts.pool.handle(this.user, op, req, (s) => this.boundSession(s))) });
          return;
        }
        if (isRuntimeTokenOp(op)) {
          const drop = (credential: string): number =>
            this.opts.scheduler.dropRuntimesOf(credential, 'its runtime token was revoked');
          this.send({ re: id, ok: true, ...(await runtimeTokenOp(this.opts.runtimeTokens, drop, this.user, op, req)) });
          return;
        }
        const reply = await this.opts.api.handle(this.user, op as (typeof SNAPSHOT_OPS)[number], req);
        this.send({ re: id, ok: true, ...reply });
      }
    }
  }

  private async putBlobs(id: RequestId, req: Json, payload: Buffer): Promise<void> {
    const results = await storeBlobs(this.blobs, req, payload, (bytes) => this.opts.metrics.moved('ws', 'in', bytes));
    this.send({ re: id, ok: true, results });
  }

  private async getBlobs(id: RequestId, digests: Digest[]): Promise<void> {
    const blobs: Json[] = [];
    const parts: Buffer[] = [];
    let offset = 0;
    const found = await this.blobs.getMany(digests);
    for (const [i, d] of digests.entries()) {
      const data = found[i];
      if (data === undefined) {
        blobs.push({ digest: formatDigest(d), code: 'not_found' });
      } else {
        blobs.push({ digest: formatDigest(d), offset, length: data.length });
        parts.push(data);
        offset += data.length;
      }
    }
    if (!(await this.drained())) return;
    this.ws.send(encodeBinary({ re: id, ok: true, blobs }, parts), { binary: true });
    this.opts.metrics.moved('ws', 'out', offset);
  }

  private async run(id: RequestId, req: Json): Promise<void> {
    const key = JSON.stringify(id);
    if (this.runs.has(key)) throw new BadRequest(`a run with id ${key} is still going on this socket; use a new id`);
    const session = req.session;
    const gpuClass = req.gpu_class;
    const code = req.code;
    if (typeof session !== 'string' || session === '') throw new BadRequest('run needs "session": a non-empty string');
    if (typeof gpuClass !== 'string' || gpuClass === '') throw new BadRequest('run needs "gpu_class", e.g. "h100"');
    if (typeof code !== 'string') throw new BadRequest('run needs "code": the cell source as a string');
    const snapshot = parseDigestField(req.snapshot, 'snapshot');
    const timeout = req.timeout_s ?? 0;
    if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout < 0) {
      throw new BadRequest('timeout_s must be a number of seconds, 0 or more (0 = no limit)');
    }
    const notebook = label(req.notebook, 'notebook');
    const cell = label(req.cell, 'cell');
    const reach = req.reach ?? null;
    if (reach !== null && !(Array.isArray(reach) && reach.every((n) => typeof n === 'string'))) {
      throw new BadRequest('reach must be a list of the names the cell can reach, or null for the whole state');
    }
    const sink = {
      event: (ev: RunEvent) => this.send({ re: id, ...ev }),
      finish: (final: RunFinal) => {
        this.runs.delete(key);
        this.send({ re: id, ...final });
      },
    };
    const run = this.opts.runs.submit(
      {
        user: this.user.name,
        session: this.boundSession(session),
        gpuClass,
        code,
        snapshot,
        timeoutS: timeout,
        reach: reach as string[] | null,
        notebook,
        cell,
      },
      this.blobs,
      sink,
    );
    this.runs.set(key, run);
  }

  /**
   * The session the runtime sees for this user's session name: a keyed hash of both, so a run reaches a warm worker
   * only of a session of its own user. Another user naming the same session gets a session of its own, and what a
   * runtime or a worker sees does not name the kernel's session.
   */
  private boundSession(session: string): string {
    return createHmac('sha256', this.opts.sessionKey).update(`${this.user.name}\0${session}`, 'utf8').digest('hex').slice(0, 32);
  }

  private failed(id: RequestId | null, e: unknown): void {
    this.send({ re: id, ok: false, error: errorOf(e, `request ${JSON.stringify(id)}`, this.opts.log) });
  }

  private send(msg: Json): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** Waits while the socket has more than HIGH_WATER_BYTES queued; false when it closed meanwhile. */
  private async drained(): Promise<boolean> {
    while (this.ws.readyState === WebSocket.OPEN && this.ws.bufferedAmount > HIGH_WATER_BYTES) {
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.ws.readyState === WebSocket.OPEN;
  }
}

/** An optional run label (`notebook`, `cell`): a string, '' when absent. */
function label(value: unknown, field: string): string {
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string' || value.length > MAX_LABEL_CHARS) {
    throw new BadRequest(`run: "${field}" must be a string of at most ${MAX_LABEL_CHARS} characters`);
  }
  return value;
}

const UNAUTHORIZED = 'kernelhop gateway: missing or wrong token (send "Authorization: Bearer TOKEN" or ?token=TOKEN)\n';

/** The error a failed request is answered with; what the client did not cause is logged. */
function errorOf(e: unknown, what: string, log: (line: string) => void): { code: string; message: string } {
  if (e instanceof BadRequest || e instanceof DigestError) return { code: 'bad_request', message: e.message };
  if (e instanceof OpError) return { code: e.code, message: e.message };
  if (isDiskFull(e)) {
    log(`${what} failed: the data directory's disk is full: ${String(e)}`);
    return { code: 'disk_full', message: DISK_FULL_MESSAGE };
  }
  log(`${what} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  return { code: 'internal', message: `gateway error: ${String(e)}` };
}

/**
 * The request's body, `length` bytes read into one buffer; undefined when it ends short, runs over or the client
 * went away (an 'error', 'aborted': the user's turn must not wait for an 'end' that never comes).
 */
function readBody(req: IncomingMessage, length: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const body = Buffer.allocUnsafe(length);
    let got = 0;
    req.on('data', (chunk: Buffer) => {
      if (got + chunk.length <= length) chunk.copy(body, got);
      got += chunk.length;
    });
    req.on('end', () => resolve(got === length ? body : undefined));
    req.on('error', () => resolve(undefined));
  });
}

/** A put_blobs request (a WebSocket frame or an upload's body): each blob decoded, verified and stored; per-blob results. */
async function storeBlobs(blobs: UserBlobView, req: Json, payload: Buffer, moved: (bytes: number) => void): Promise<Json[]> {
  if (!Array.isArray(req.blobs)) throw new BadRequest('put_blobs needs "blobs": [{digest, offset, length}]');
  // Validate every entry before storing any, so a malformed request stores nothing.
  const declared = req.blobs.reduce((n: number, b: unknown) => n + declaredSize(b), 0);
  if (declared > MAX_PAYLOAD_BYTES) {
    throw new BadRequest(`put_blobs declares ${declared} bytes of blobs; at most ${MAX_PAYLOAD_BYTES} per frame, split it`);
  }
  const items = req.blobs.map((b: unknown, i: number) => {
    if (typeof b !== 'object' || b === null) throw new BadRequest(`blobs[${i}] must be an object`);
    const { digest, offset, length, codec } = b as Json;
    const d = parseDigestField(digest, `blobs[${i}].digest`);
    if (!isCount(offset) || !isCount(length) || offset + length > payload.length) {
      throw new BadRequest(
        `blobs[${i}]: offset ${String(offset)} and length ${String(length)} must lie within the ${payload.length}-byte payload`,
      );
    }
    if (codec !== undefined && !isCodec(codec)) {
      throw new BadRequest(`blobs[${i}].codec ${JSON.stringify(codec)} is not one of ${CODECS.join(', ')}; or send raw bytes`);
    }
    return { digest: d, data: payload.subarray(offset, offset + length), codec: codec as Codec | undefined };
  });
  // Decoded per item: bytes that are not valid zstd fail that item alone, as a digest mismatch would.
  const results: Json[] = items.map((it) => ({ digest: formatDigest(it.digest) }));
  const decoded: { digest: Digest; data: Uint8Array; at: number }[] = [];
  await Promise.all(
    items.map(async (it, i) => {
      try {
        const data = it.codec === undefined ? it.data : await decodeBlob(it.codec, it.data, it.digest.sizeBytes);
        decoded.push({ digest: it.digest, data, at: i });
      } catch (e) {
        Object.assign(results[i], { code: 'bad_encoding', message: `not valid ${it.codec} data: ${String(e)}` });
      }
    }),
  );
  decoded.sort((a, b) => a.at - b.at);
  const puts = await blobs.putMany(decoded);
  moved(decoded.reduce((n, it) => n + it.data.length, 0));
  for (const [k, put] of puts.entries()) Object.assign(results[decoded[k].at], { code: put.code, message: put.message });
  return results;
}

export function encodeBinary(header: Json, parts: Buffer[]): Buffer {
  const head = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(head.length, 0);
  return Buffer.concat([len, head, ...parts]);
}

function splitBinary(data: Buffer): { header: Json; payload: Buffer } {
  if (data.length < 4) throw new BadRequest('binary frame shorter than its 4-byte header length');
  const n = data.readUInt32BE(0);
  if (4 + n > data.length) {
    throw new BadRequest(`binary frame says its JSON header has ${n} bytes but only ${data.length - 4} follow`);
  }
  return { header: parseJsonObject(data.subarray(4, 4 + n), 'binary frame header'), payload: data.subarray(4 + n) };
}

function parseJsonObject(bytes: Buffer, what: string): Json {
  if (bytes.length > MAX_JSON_BYTES) {
    throw new BadRequest(`${what} has ${bytes.length} bytes of JSON; at most ${MAX_JSON_BYTES}, split the request`);
  }
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new BadRequest(`${what} is not JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BadRequest(`${what} must be a JSON object`);
  return v as Json;
}

function requestId(v: unknown): RequestId {
  if (typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))) return v;
  throw new BadRequest('every request needs "id": a string or a number, echoed back as "re"');
}

function digestList(v: unknown, field: string): Digest[] {
  if (!Array.isArray(v)) throw new BadRequest(`"${field}" must be an array of "<64 hex>/<size>" digests`);
  if (v.length > MAX_DIGESTS) throw new BadRequest(`"${field}" names ${v.length} digests; at most ${MAX_DIGESTS} per request, split it`);
  return v.map((d, i) => parseDigestField(d, `${field}[${i}]`));
}

function parseDigestField(v: unknown, field: string): Digest {
  try {
    return parseDigest(v);
  } catch (e) {
    throw new BadRequest(`${field}: ${(e as Error).message}`);
  }
}

/** The size a put_blobs entry's digest declares (0 when malformed: the entry is refused later, by name). */
function declaredSize(b: unknown): number {
  const digest = typeof b === 'object' && b !== null ? (b as Json).digest : undefined;
  const size = typeof digest === 'string' ? Number(digest.slice(digest.indexOf('/') + 1)) : 0;
  return Number.isSafeInteger(size) && size > 0 ? size : 0;
}

/** At most `limit` tasks at once; the others wait in arrival order. */
class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active += 1;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.active -= 1;
    }
  }
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function rejectUpgrade(socket: Duplex, status: number, reason: string, body: string): void {
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}
