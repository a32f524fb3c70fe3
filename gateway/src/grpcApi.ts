// The runtime-facing gRPC API (proto/kernelhop/v1/runtime.proto): ContentAddressableStorage and Runtimes.
import * as grpc from '@grpc/grpc-js';
import { Digest, DigestError, formatDigest, makeDigest } from '@kernelhop/kernel-snapshot';
import { agree, fromProtoNames, IncompatiblePeer, loadRuntimeProtoKeepCase, offer, toProtoNames } from '@kernelhop/proto';
import type { BatchReadBlobsRequest } from '@kernelhop/proto/grpc-keepcase/BatchReadBlobsRequest';
import type { BatchReadBlobsResponseInit } from '@kernelhop/proto/grpc-keepcase/BatchReadBlobsResponse';
import type { BatchUpdateBlobsRequest } from '@kernelhop/proto/grpc-keepcase/BatchUpdateBlobsRequest';
import type { BatchUpdateBlobsResponseInit } from '@kernelhop/proto/grpc-keepcase/BatchUpdateBlobsResponse';
import type { CellEvent as PbCellEvent } from '@kernelhop/proto/grpc-keepcase/CellEvent';
import type { Digest as PbDigest } from '@kernelhop/proto/grpc-keepcase/Digest';
import type { FindMissingBlobsRequest } from '@kernelhop/proto/grpc-keepcase/FindMissingBlobsRequest';
import type { FindMissingBlobsResponseInit } from '@kernelhop/proto/grpc-keepcase/FindMissingBlobsResponse';
import type { GetBlobUrlsRequest } from '@kernelhop/proto/grpc-keepcase/GetBlobUrlsRequest';
import type { GatewayMessageInit as PbGatewayMessage } from '@kernelhop/proto/grpc-keepcase/GatewayMessage';
import type { HeartbeatRequest } from '@kernelhop/proto/grpc-keepcase/HeartbeatRequest';
import type { RegisterRequest as RegisterReq } from '@kernelhop/proto/grpc-keepcase/RegisterRequest';
import type { RegisterResponseInit } from '@kernelhop/proto/grpc-keepcase/RegisterResponse';
import type { RuntimeMessage as PbRuntimeMessage } from '@kernelhop/proto/grpc-keepcase/RuntimeMessage';
import { BlobStore, PutCode } from './blobStore.js';
import { DISK_FULL_MESSAGE, isDiskFull } from './diskFull.js';
import type { Log } from './log.js';
import type { GatewayMetrics } from './metrics.js';
import { RuntimeCredential, RuntimeTokenStore } from './runtimeTokens.js';
import { DownMessage, RuntimeEvent, Scheduler, SchedulerError, WorkLink } from './scheduler.js';
import { SnapshotStore } from './snapshotStore.js';
import { BlobUrlError, blobUrls } from './stores/directReads.js';

/** What the gateway offers runtimes in Register's hello; the schema's defaults (proto/kernelhop/v1/capabilities.proto). */
export const GRPC_CAPABILITIES = offer([]);
/** Largest batch of blob bytes one BatchReadBlobs answers, as get_blobs on the WebSocket. */
export const MAX_BATCH_READ_BYTES = GRPC_CAPABILITIES.maxBatchReadBytes;
/** Message limit both ways: a 48 MiB batch plus framing. */
export const MAX_GRPC_MESSAGE_BYTES = GRPC_CAPABILITIES.maxFrameBytes;

export function loadProto(): ReturnType<typeof loadRuntimeProtoKeepCase> {
  return loadRuntimeProtoKeepCase();
}

function statusError(code: grpc.status, details: string): Partial<grpc.StatusObject> {
  return { code, details };
}

function toDigest(pb: PbDigest | null | undefined, what: string): Digest {
  if (pb === null || pb === undefined) throw new DigestError(`${what} is missing`);
  try {
    return makeDigest(pb.hash, Number(pb.size_bytes));
  } catch (e) {
    throw new DigestError(`${what}: ${(e as Error).message}`);
  }
}

function toPb(d: Digest): PbDigest {
  return { hash: d.hash, size_bytes: d.sizeBytes };
}

const PUT_STATUS: Record<PutCode, grpc.status> = {
  ok: grpc.status.OK,
  digest_mismatch: grpc.status.INVALID_ARGUMENT,
  too_large: grpc.status.RESOURCE_EXHAUSTED,
  // Runtimes write to the store unscoped, so this only completes the mapping.
  quota_exceeded: grpc.status.RESOURCE_EXHAUSTED,
};

/** A request the caller got wrong as a whole: INVALID_ARGUMENT. */
class RequestError extends Error {}

/** A call refused for who makes it: its status and why. */
class CallerError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

const HOW_TO_GET_A_TOKEN =
  'runtimes need a runtime token: an admin makes one with `kernelhop runtime-token create [--class C]`, ' +
  'and the runtime takes it from KERNELHOP_TOKEN or --token';

/** Who calls: a runtime token, and for calls that act for a runtime, that runtime (registered with the token). */
interface Caller {
  credential: RuntimeCredential;
  runtimeId: string;
}

export class GrpcApi {
  readonly server: grpc.Server;

  constructor(
    private readonly tokens: RuntimeTokenStore,
    private readonly users: SnapshotStore,
    private readonly store: BlobStore,
    private readonly scheduler: Scheduler,
    private readonly log: Log,
    private readonly metrics: GatewayMetrics,
  ) {
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': MAX_GRPC_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_GRPC_MESSAGE_BYTES,
    });
    const proto = loadProto();
    this.server.addService(proto.ContentAddressableStorage.service, {
      FindMissingBlobs: this.unary(true, (req: FindMissingBlobsRequest, caller) => this.findMissing(req, caller)),
      BatchUpdateBlobs: this.unary(true, (req: BatchUpdateBlobsRequest, caller) => this.batchUpdate(req, caller)),
      BatchReadBlobs: this.unary(true, (req: BatchReadBlobsRequest, caller) => this.batchRead(req, caller)),
      GetBlobUrls: this.unary(true, async (req: GetBlobUrlsRequest, caller) => {
        const digests = req.digests.map((d, i) => toDigest(d, `digests[${i}]`));
        const urls = await blobUrls(this.store, this.scheduler.readScope(caller.runtimeId), digests);
        return { responses: urls.map((u) => ({ digest: toPb(u.digest), url: u.url, offset: u.offset, status: u.status })) };
      }),
    });
    this.server.addService(proto.Runtimes.service, {
      Register: this.unary(false, (req: RegisterReq, caller) => this.registerRuntime(req, caller.credential)),
      // A runtime id not registered with this token is as good as unknown: it must register (with its own token).
      Heartbeat: this.unary(false, async (req: HeartbeatRequest, caller) => ({
        known: this.scheduler.registeredWith(req.runtime_id, caller.credential.id) && this.scheduler.heartbeat(req.runtime_id),
      })),
      Work: (call: grpc.ServerDuplexStream<PbRuntimeMessage, PbGatewayMessage>) => this.work(call),
    });
  }

  /** Binds `host:port` (0 = a free port) and returns the port bound; TLS only when `tls` is given. */
  bind(host: string, port: number, tls?: { certChain: Buffer; key: Buffer }): Promise<number> {
    const addr = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    const creds =
      tls === undefined
        ? grpc.ServerCredentials.createInsecure()
        : grpc.ServerCredentials.createSsl(null, [{ cert_chain: tls.certChain, private_key: tls.key }], false);
    return new Promise((resolve, reject) => {
      this.server.bindAsync(addr, creds, (err, bound) =>
        err ? reject(err) : resolve(bound),
      );
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      const force = setTimeout(() => this.server.forceShutdown(), 2000);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  /**
   * The runtime token the call carries, and with `forRuntime`, the runtime (metadata `runtime-id`) it acts for, which
   * must be registered with that token. The admin's and users' tokens are refused: they never belong on a GPU host.
   */
  private async caller(metadata: grpc.Metadata, forRuntime: boolean): Promise<Caller> {
    const values = metadata.get('authorization');
    const bearer = values.length === 1 && typeof values[0] === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(values[0]) : null;
    if (bearer === null) {
      throw new CallerError(grpc.status.UNAUTHENTICATED, `missing token: send metadata "authorization: Bearer TOKEN"; ${HOW_TO_GET_A_TOKEN}`);
    }
    const credential = await this.tokens.authenticate(bearer[1]);
    if (credential === undefined) {
      const user = await this.users.authenticate(bearer[1]);
      if (user !== undefined) {
        const whose = user.admin ? "the gateway's admin token" : `user ${user.name}'s token`;
        throw new CallerError(grpc.status.PERMISSION_DENIED, `${whose} is refused on gRPC; ${HOW_TO_GET_A_TOKEN}`);
      }
      throw new CallerError(grpc.status.UNAUTHENTICATED, `wrong or revoked token; ${HOW_TO_GET_A_TOKEN}`);
    }
    const ids = metadata.get('runtime-id');
    const runtimeId = typeof ids[0] === 'string' ? ids[0] : '';
    if (forRuntime && !this.scheduler.registeredWith(runtimeId, credential.id)) {
      throw new CallerError(
        grpc.status.PERMISSION_DENIED,
        `runtime-id ${JSON.stringify(runtimeId)} is not a runtime registered with this token (or it was dropped); call Register again`,
      );
    }
    return { credential, runtimeId };
  }

  /** A unary handler with the caller's check and errors mapped to gRPC statuses. */
  private unary<Req, Res>(forRuntime: boolean, fn: (req: Req, caller: Caller) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      this.caller(call.metadata, forRuntime).then((caller) => fn(call.request, caller)).then(
        (res) => callback(null, res),
        (e: unknown) => {
          if (e instanceof CallerError || e instanceof BlobUrlError) {
            callback(statusError(e.code, e.message));
          } else if (e instanceof DigestError || e instanceof SchedulerError || e instanceof RequestError) {
            callback(statusError(grpc.status.INVALID_ARGUMENT, e.message));
          } else {
            this.log(`gRPC handler failed: ${String(e)}`);
            callback(statusError(grpc.status.INTERNAL, `gateway error: ${String(e)}`));
          }
        },
      );
    };
  }

  private async findMissing(req: FindMissingBlobsRequest, caller: Caller): Promise<FindMissingBlobsResponseInit> {
    const digests = req.blob_digests.map((d, i) => toDigest(d, `blob_digests[${i}]`));
    // A blob outside the runtime's runs is "missing" whether stored or not: the answer reveals nothing of other
    // users' content, and the runtime uploads the bytes, which proves it has them.
    const mayRead = this.scheduler.readScope(caller.runtimeId);
    const outside = digests.filter((d) => !mayRead(formatDigest(d)));
    const inside = digests.filter((d) => mayRead(formatDigest(d)));
    const absent = await this.store.findMissing(inside);
    // What it was told is present it will not upload, so a result of any run it holds now may name it, even after
    // the run that made it readable has ended.
    const absentKeys = new Set(absent.map(formatDigest));
    this.scheduler.proved(caller.runtimeId, inside.map(formatDigest).filter((d) => !absentKeys.has(d)));
    return { missing_blob_digests: [...outside, ...absent].map(toPb) };
  }

  private async batchUpdate(req: BatchUpdateBlobsRequest, caller: Caller): Promise<BatchUpdateBlobsResponseInit> {
    if (!this.scheduler.holdsRuns(caller.runtimeId)) {
      throw new CallerError(grpc.status.PERMISSION_DENIED, 'this runtime holds no run: it uploads only the results of runs assigned to it');
    }
    // Checked one by one (a malformed digest fails its item alone), stored as one batch: one pack, one fsync.
    const parsed = req.requests.map((r, i) => {
      try {
        return { digest: toDigest(r.digest, `requests[${i}].digest`), data: r.data };
      } catch (e) {
        return (e as Error).message;
      }
    });
    const items = parsed.filter((p): p is { digest: Digest; data: Buffer } => typeof p !== 'string');
    const puts = await this.store.putMany(items).catch((e: unknown) => {
      if (isDiskFull(e)) return items.map(() => ({ code: 'disk_full' as const, message: DISK_FULL_MESSAGE }));
      throw e;
    });
    let k = 0;
    const responses = parsed.map((p, i) => {
      if (typeof p === 'string') return { digest: req.requests[i]?.digest, status: { code: grpc.status.INVALID_ARGUMENT, message: p } };
      const result = puts[k++] as { code: PutCode | 'disk_full'; message: string };
      if (result.code === 'disk_full') return { digest: toPb(p.digest), status: { code: grpc.status.RESOURCE_EXHAUSTED, message: result.message } };
      if (result.code === 'ok') this.scheduler.proved(caller.runtimeId, [formatDigest(p.digest)]);
      this.metrics.moved('grpc', 'in', p.data.length);
      return { digest: toPb(p.digest), status: { code: PUT_STATUS[result.code], message: result.message } };
    });
    return { responses };
  }

  private async batchRead(req: BatchReadBlobsRequest, caller: Caller): Promise<BatchReadBlobsResponseInit> {
    const digests = req.digests.map((d, i) => toDigest(d, `digests[${i}]`));
    const total = digests.reduce((n, d) => n + d.sizeBytes, 0);
    if (total > MAX_BATCH_READ_BYTES) {
      throw new RequestError(
        `BatchReadBlobs asks for ${total} bytes; at most ${MAX_BATCH_READ_BYTES} per call, split the batch`,
      );
    }
    const mayRead = this.scheduler.readScope(caller.runtimeId);
    const responses = await Promise.all(
      digests.map(async (d) => {
        if (!mayRead(formatDigest(d))) {
          return {
            digest: toPb(d),
            data: Buffer.alloc(0),
            status: {
              code: grpc.status.PERMISSION_DENIED,
              message: `blob ${formatDigest(d)} is not part of a run assigned to this runtime`,
            },
          };
        }
        const data = await this.store.get(d);
        this.metrics.moved('grpc', 'out', data?.length ?? 0);
        return data === undefined
          ? {
              digest: toPb(d),
              data: Buffer.alloc(0),
              status: { code: grpc.status.NOT_FOUND, message: `blob ${formatDigest(d)} is not in the store` },
            }
          : { digest: toPb(d), data, status: { code: grpc.status.OK, message: '' } };
      }),
    );
    return { responses };
  }

  private async registerRuntime(req: RegisterReq, credential: RuntimeCredential): Promise<RegisterResponseInit> {
    // The hello: a runtime that states no capabilities (an older one) is refused saying so, rather than left to guess.
    let agreed;
    try {
      agreed = agree(GRPC_CAPABILITIES, fromProtoNames(req.capabilities), `runtime ${JSON.stringify(req.name)}`);
    } catch (e) {
      if (e instanceof IncompatiblePeer) throw new CallerError(grpc.status.FAILED_PRECONDITION, e.message);
      throw e;
    }
    const other = req.classes.find((c) => c.name !== credential.gpuClass);
    if (credential.gpuClass !== null && other !== undefined) {
      throw new CallerError(
        grpc.status.PERMISSION_DENIED,
        `this runtime token (${credential.id}) is for GPU class ${credential.gpuClass} only; it cannot offer ${JSON.stringify(other.name)}`,
      );
    }
    const runtimeId = this.scheduler.register({
      name: req.name,
      classes: req.classes.map((c) => ({ name: c.name, simulated: c.simulated })),
      capacity: req.capacity,
      slots: req.slots.map((s) => ({ index: s.index, device: s.device, name: s.name, memoryMib: Number(s.memory_mib) })),
      version: req.version,
    }, credential.id);
    return { runtime_id: runtimeId, heartbeat_interval_ms: this.scheduler.heartbeatIntervalMs, capabilities: toProtoNames(agreed) };
  }

  private work(call: grpc.ServerDuplexStream<PbRuntimeMessage, PbGatewayMessage>): void {
    // Messages that arrive before the token is checked wait in the stream (it is paused until then).
    call.pause();
    this.caller(call.metadata, false).then(
      (caller) => {
        const ids = call.metadata.get('runtime-id');
        const runtimeId = typeof ids[0] === 'string' ? ids[0] : '';
        // Another token's runtime is as unknown to this one as a dropped runtime.
        this.attachWork(call, this.scheduler.registeredWith(runtimeId, caller.credential.id) ? runtimeId : '', runtimeId);
        call.resume();
      },
      (e: unknown) => {
        const err = e instanceof CallerError ? e : new CallerError(grpc.status.INTERNAL, `gateway error: ${String(e)}`);
        call.emit('error', statusError(err.code, err.message));
      },
    );
  }

  /**
   * Attaches the Work stream of `runtimeId` (empty: refused as unknown, named `asked` in the error). Events come
   * only over this stream, so a run's result is accepted only from the runtime it was assigned to.
   */
  private attachWork(call: grpc.ServerDuplexStream<PbRuntimeMessage, PbGatewayMessage>, runtimeId: string, asked: string): void {
    const link = new StreamLink(call);
    const attached = this.scheduler.attachWork(runtimeId, link);
    if (attached !== 'ok') {
      const why =
        attached === 'unknown'
          ? `runtime-id ${JSON.stringify(asked)} is not registered with this token (or was dropped); call Register again`
          : `runtime ${runtimeId} already has a Work stream open`;
      call.emit('error', statusError(attached === 'unknown' ? grpc.status.NOT_FOUND : grpc.status.ALREADY_EXISTS, why));
      return;
    }
    let ended = false;
    const end = (reason: string): void => {
      if (ended) return;
      ended = true;
      this.scheduler.workEnded(runtimeId, link, reason);
    };
    call.on('data', (msg: PbRuntimeMessage) => {
      if (msg.slots_taken !== null && msg.slots_taken !== undefined) {
        this.scheduler.slotsTaken(runtimeId, msg.slots_taken.slots);
        return;
      }
      const ev = msg.event;
      if (ev === null || ev === undefined) return;
      const decoded = decodeEvent(ev);
      this.scheduler.runtimeEvent(runtimeId, ev.run_id, decoded);
    });
    call.on('end', () => {
      end('the runtime closed its Work stream');
      call.end();
    });
    call.on('cancelled', () => end('the Work stream was cancelled'));
    call.on('error', (e: Error) => end(`the Work stream failed: ${e.message}`));
    call.on('close', () => end('the Work stream closed'));
  }
}

/** Maps a CellEvent to the scheduler's form; a Done with a malformed snapshot digest becomes a Failed. */
function decodeEvent(ev: PbCellEvent): RuntimeEvent {
  switch (ev.kind) {
    case 'started':
      return { kind: 'started', worker: ev.started?.worker ?? '', warm: ev.started?.warm ?? false };
    case 'stream':
      return { kind: 'stream', name: ev.stream?.name ?? 'stdout', text: ev.stream?.text ?? '' };
    case 'display':
    case 'result': {
      const d = ev[ev.kind];
      return { kind: ev.kind, dataJson: d?.data_json ?? '', metadataJson: d?.metadata_json ?? '' };
    }
    case 'error':
      return {
        kind: 'error',
        ename: ev.error?.ename ?? '',
        evalue: ev.error?.evalue ?? '',
        traceback: ev.error?.traceback ?? [],
        etype: ev.error?.etype ?? '',
      };
    case 'progress':
      return {
        kind: 'progress',
        phase: ev.progress?.phase ?? '',
        doneBytes: Number(ev.progress?.done_bytes ?? 0),
        totalBytes: Number(ev.progress?.total_bytes ?? 0),
      };
    case 'done':
      try {
        return {
          kind: 'done',
          status: ev.done?.status || 'ok',
          snapshot: toDigest(ev.done?.snapshot, 'Done.snapshot'),
          timingsJson: ev.done?.timings_json ?? '',
        };
      } catch (e) {
        return { kind: 'failed', code: 'worker_died', message: `the runtime reported an invalid snapshot: ${(e as Error).message}` };
      }
    case 'failed':
      return { kind: 'failed', code: ev.failed?.code ?? '', message: ev.failed?.message ?? '' };
    case 'refused':
      return { kind: 'refused', reason: ev.refused?.reason ?? '' };
    default:
      return { kind: 'failed', code: 'worker_died', message: 'the runtime sent a CellEvent of no known kind' };
  }
}

/** A Work stream as the scheduler's WorkLink; honours backpressure (write() false → wait for 'drain'). */
class StreamLink implements WorkLink {
  private readonly backlog: PbGatewayMessage[] = [];
  private waiting = false;
  private closed = false;

  constructor(private readonly call: grpc.ServerDuplexStream<PbRuntimeMessage, PbGatewayMessage>) {}

  send(msg: DownMessage): void {
    if (this.closed) return;
    this.backlog.push(
      msg.kind === 'assign'
        ? {
            assign: {
              run_id: msg.runId,
              session: msg.session,
              gpu_class: msg.gpuClass,
              code: msg.code,
              snapshot: toPb(msg.snapshot),
              timeout_s: msg.timeoutS,
              lazy: msg.reach !== null,
              reach: msg.reach ?? [],
              slot: msg.slot,
              warm_grace_s: msg.warmGraceS,
            },
          }
        : { cancel: { run_id: msg.runId, reason: msg.reason } },
    );
    this.flush();
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.backlog.length = 0;
    this.call.emit('error', statusError(grpc.status.UNAVAILABLE, `the gateway dropped this runtime: ${reason}`));
  }

  private flush(): void {
    while (!this.waiting && !this.closed && this.backlog.length > 0) {
      const next = this.backlog.shift() as PbGatewayMessage;
      if (!this.call.write(next)) {
        this.waiting = true;
        this.call.once('drain', () => {
          this.waiting = false;
          this.flush();
        });
      }
    }
  }
}
