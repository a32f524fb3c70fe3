// A small in-memory gateway for the runtime's tests: the proto's services with a Map as the store. Held to the real
// gateway by test/contract.test.ts (the same cases against both).
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { IncompatiblePeer, agree, offer } from '@kernelhop/proto';
import { digestOf, formatDigest, manifestBlobDigests, manifestFilesTree, parseManifestBytes, treeBlobDigests } from '@kernelhop/kernel-snapshot';
import { loadKernelhopProto } from '../src/proto.js';
import type { Assignment, CellEvent, GatewayMessage, PbDigest, RegisterRequest, RuntimeMessage } from '../src/proto.js';

export class FakeGateway extends EventEmitter {
  readonly store = new Map<string, Buffer>();
  readonly registrations: RegisterRequest[] = [];
  readonly events = new Map<string, CellEvent[]>();
  readonly known = new Set<string>();
  heartbeats = 0;
  /** Every SlotsTaken the runtime sent, in order (several gateways). */
  readonly slotsTaken: number[][] = [];
  /** Runs assigned and not yet ended: a runtime may upload only while it holds one. */
  readonly held = new Set<string>();
  /**
   * As the real gateway, what a runtime may read, by run held: its snapshot (the manifest, its chunks, its file
   * tree's blobs) and what the runtime uploaded or was told is present while holding it. Unlike the real gateway's,
   * one scope for every runtime of this fake (its tests run one runtime per fake).
   */
  private readonly scope = new Map<string, Set<string>>();
  /** Sizes of the BatchReadBlobs answers, and every blob BatchUpdateBlobs received. */
  readonly readBatches: number[] = [];
  readonly uploaded: PbDigest[] = [];
  port = 0;
  private readonly server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024 });
  private readonly streams = new Map<string, grpc.ServerDuplexStream<RuntimeMessage, GatewayMessage>>();
  private nextId = 1;

  constructor(
    readonly token = 'test-token',
    private readonly heartbeatIntervalMs = 300,
  ) {
    super();
    const pkg = loadKernelhopProto();
    const authed =
      <Req, Res>(fn: (req: Req) => Res): grpc.handleUnaryCall<Req, Res> =>
      (call, cb) => {
        if (!this.authorized(call.metadata)) return cb({ code: grpc.status.UNAUTHENTICATED, details: 'bad token' });
        try {
          cb(null, fn(call.request));
        } catch (e) {
          if (!(e instanceof CallError)) throw e;
          cb({ code: e.code, details: e.message });
        }
      };
    this.server.addService(pkg.Runtimes.service, {
      register: authed((req: RegisterRequest) => {
        // As the real gateway: a runtime without the hello (or of another protocol) is refused.
        try {
          agree(offer([]), req.capabilities ?? null, 'this runtime');
        } catch (e) {
          if (e instanceof IncompatiblePeer) throw new CallError(grpc.status.FAILED_PRECONDITION, e.message);
          throw e;
        }
        const runtimeId = `rt-${this.nextId++}`;
        this.registrations.push(req);
        this.known.add(runtimeId);
        this.emit('registered', runtimeId, req);
        // The hello: this fake takes what the gateway's defaults are (the schema's), as the real gateway answers.
        return { runtimeId, heartbeatIntervalMs: this.heartbeatIntervalMs, capabilities: offer([]) };
      }),
      heartbeat: authed((req: { runtimeId: string }) => {
        this.heartbeats++;
        return { known: this.known.has(req.runtimeId) };
      }),
      work: (call: grpc.ServerDuplexStream<RuntimeMessage, GatewayMessage>) => {
        const id = String(call.metadata.get('runtime-id')[0] ?? '');
        if (!this.authorized(call.metadata) || !this.known.has(id)) {
          // As the real gateway: a wrong token is UNAUTHENTICATED, an unknown runtime NOT_FOUND (register again).
          const known = this.authorized(call.metadata);
          call.emit('error', { code: known ? grpc.status.NOT_FOUND : grpc.status.UNAUTHENTICATED, details: known ? `unknown runtime ${id}` : 'bad token' });
          return;
        }
        this.streams.set(id, call);
        this.emit('stream', id);
        call.on('data', (msg: RuntimeMessage) => {
          if (msg.slotsTaken !== undefined) {
            this.slotsTaken.push(msg.slotsTaken.slots);
            this.emit('slotsTaken', msg.slotsTaken.slots);
            return;
          }
          const ev = msg.event;
          if (ev === undefined) return;
          const list = this.events.get(ev.runId) ?? [];
          list.push(ev);
          this.events.set(ev.runId, list);
          if (ev.done || ev.failed) {
            this.held.delete(ev.runId);
            this.scope.delete(ev.runId);
          }
          this.emit('event', ev);
        });
        call.on('end', () => call.end());
        call.on('error', () => undefined);
      },
    });
    this.server.addService(pkg.ContentAddressableStorage.service, {
      findMissingBlobs: authed((req: { blobDigests: PbDigest[] }) => {
        // As the real gateway: a blob outside the runtime's runs is missing whether stored or not.
        const missing = req.blobDigests.filter((d) => !this.mayRead(d.hash) || !this.store.has(d.hash));
        this.proved(req.blobDigests.filter((d) => !missing.includes(d)));
        return { missingBlobDigests: missing };
      }),
      batchUpdateBlobs: authed((req: { requests: { digest: PbDigest; data: Buffer }[] }) => {
        // As the real gateway: a runtime uploads only the results of runs it holds.
        if (this.held.size === 0) throw new CallError(grpc.status.PERMISSION_DENIED, 'this runtime holds no run');
        return {
          responses: req.requests.map(({ digest, data }) => {
            const actual = digestOf(data);
            if (actual.hash !== digest.hash || actual.sizeBytes !== Number(digest.sizeBytes)) {
              return { digest, status: { code: grpc.status.INVALID_ARGUMENT, message: 'digest mismatch' } };
            }
            this.store.set(digest.hash, data);
            this.uploaded.push(digest);
            this.proved([digest]);
            return { digest, status: { code: 0, message: '' } };
          }),
        };
      }),
      batchReadBlobs: authed((req: { digests: PbDigest[] }) => {
        this.readBatches.push(req.digests.reduce((n, d) => n + Number(d.sizeBytes), 0));
        const responses = req.digests.map((digest) => {
          const name = formatDigest({ hash: digest.hash, sizeBytes: Number(digest.sizeBytes) });
          if (!this.mayRead(digest.hash)) {
            const message = `blob ${name} is not part of a run assigned to this runtime`;
            return { digest, data: Buffer.alloc(0), status: { code: grpc.status.PERMISSION_DENIED, message } };
          }
          const data = this.store.get(digest.hash);
          if (data) return { digest, data, status: { code: 0, message: '' } };
          return { digest, data: Buffer.alloc(0), status: { code: grpc.status.NOT_FOUND, message: `blob ${name} not found` } };
        });
        return { responses };
      }),
    });
  }

  private authorized(md: grpc.Metadata): boolean {
    return md.get('authorization')[0] === `Bearer ${this.token}`;
  }

  start(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (err) return reject(err);
        this.port = port;
        resolve(port);
      });
    });
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  stop(): void {
    for (const s of this.streams.values()) s.end();
    this.server.forceShutdown();
  }

  put(bytes: Buffer): PbDigest {
    const d = digestOf(bytes);
    this.store.set(d.hash, bytes);
    return { hash: d.hash, sizeBytes: d.sizeBytes };
  }

  /** A runtime's Work stream, once it has opened one. */
  async streamOf(runtimeId: string): Promise<grpc.ServerDuplexStream<RuntimeMessage, GatewayMessage>> {
    for (;;) {
      const s = this.streams.get(runtimeId);
      if (s) return s;
      await new Promise((r) => this.once('stream', r));
    }
  }

  async assign(runtimeId: string, assignment: Partial<Assignment> & { runId: string; code: string; snapshot: PbDigest }): Promise<void> {
    const stream = await this.streamOf(runtimeId);
    this.held.add(assignment.runId);
    this.scope.set(assignment.runId, await this.snapshotBlobs(assignment.snapshot));
    stream.write({ assign: { session: 'session-1', gpuClass: 'cpu', timeoutS: 0, lazy: false, reach: [], slot: 0, warmGraceS: 0, ...assignment } });
  }

  /** The hashes of a snapshot's manifest, its chunks and its file tree's blobs, as far as this store has them. */
  private async snapshotBlobs(snapshot: PbDigest): Promise<Set<string>> {
    const blobs = new Set([snapshot.hash]);
    const bytes = this.store.get(snapshot.hash);
    if (bytes === undefined) return blobs;
    const manifest = parseManifestBytes(bytes);
    for (const d of manifestBlobDigests(manifest)) blobs.add(d.hash);
    const tree = manifestFilesTree(manifest);
    if (tree !== undefined) {
      const walk = await treeBlobDigests(tree, (ds) => Promise.resolve(ds.map((d) => this.store.get(d.hash))));
      if (walk.ok) for (const d of walk.blobs) blobs.add(d.hash);
    }
    return blobs;
  }

  private mayRead(hash: string): boolean {
    return [...this.scope.values()].some((blobs) => blobs.has(hash));
  }

  /** What the runtime uploaded, or was told is present, while holding runs: their results may name it. */
  private proved(digests: PbDigest[]): void {
    for (const blobs of this.scope.values()) for (const d of digests) blobs.add(d.hash);
  }

  async cancel(runtimeId: string, runId: string): Promise<void> {
    (await this.streamOf(runtimeId)).write({ cancel: { runId, reason: 'interrupted by the test' } });
  }

  /** Resolves once the runtime has said the slots other gateways hold are `slots`. */
  async told(slots: number[], timeoutMs = 30_000): Promise<void> {
    const key = slots.join(',');
    const deadline = Date.now() + timeoutMs;
    while (this.slotsTaken.at(-1)?.join(',') !== key) {
      if (Date.now() > deadline) throw new Error(`the runtime never said slots [${key}] are taken; it said ${JSON.stringify(this.slotsTaken)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Resolves with a run's events once its final event (done or failed) arrived. */
  finished(runId: string, timeoutMs = 60_000): Promise<CellEvent[]> {
    return this.until(runId, (e) => Boolean(e.done || e.failed || e.refused), timeoutMs);
  }

  until(runId: string, pred: (e: CellEvent) => boolean, timeoutMs = 60_000): Promise<CellEvent[]> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const list = this.events.get(runId) ?? [];
        if (!list.some(pred)) return false;
        clearTimeout(timer);
        this.off('event', onEvent);
        resolve(list);
        return true;
      };
      const onEvent = (): void => void check();
      const timer = setTimeout(() => {
        this.off('event', onEvent);
        reject(new Error(`run ${runId}: no matching event in ${timeoutMs} ms; got ${JSON.stringify(this.events.get(runId) ?? [])}`));
      }, timeoutMs);
      if (!check()) this.on('event', onEvent);
    });
  }
}

/** A refusal a handler throws: answered as that gRPC status. */
class CallError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}
