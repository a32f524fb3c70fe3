// gRPC client for the gateway: registration, heartbeats, the Work stream and the blob store calls.
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { agree, offer, type Capabilities } from '@kernelhop/proto';
import type {
  BatchReadBlobsResponse,
  BatchUpdateBlobsResponse,
  CellEvent,
  FindMissingBlobsResponse,
  GatewayMessage,
  GetBlobUrlsResponse,
  HeartbeatRequest,
  HeartbeatResponse,
  KernelhopPackage,
  PbDigest,
  RegisterRequestInit,
  RegisterResponse,
  RuntimeMessage,
} from './proto.js';

/** What this runtime offers in Register's hello: the schema's defaults (proto/kernelhop/v1/capabilities.proto). */
export const RUNTIME_CAPABILITIES = offer([]);
/** Largest batch of blob bytes one call may carry, whatever was agreed. */
export const MAX_BATCH_BYTES = RUNTIME_CAPABILITIES.maxBatchReadBytes;
// The gRPC default (4 MiB) is smaller than one batch.
const MAX_MESSAGE_BYTES = RUNTIME_CAPABILITIES.maxFrameBytes;
const FLOW_CONTROL_WINDOW_BYTES = 16 * 1024 * 1024;
const CONTROL_DEADLINE_MS = 10_000;
const BLOB_DEADLINE_MS = 120_000;

type Unary<Req, Res> = (
  req: Req,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Res) => void,
) => grpc.ClientUnaryCall;

export class GatewayClient {
  private readonly runtimes: grpc.Client;
  private readonly cas: grpc.Client;
  /** Set once registered: the gateway lets a runtime read and upload only for the runs assigned to that id. */
  private runtimeId = '';
  /** Whether to read blobs straight from the gateway's store (blobReads.ts); off once that fails or it gives no URLs. */
  directReads = true;
  /** What Register's hello agreed with the gateway (batch bytes, batches in flight); the offer until then. */
  agreed: Capabilities = RUNTIME_CAPABILITIES;

  constructor(
    readonly address: string,
    private readonly token: string,
    pkg: KernelhopPackage,
    readonly log: (line: string) => void = () => undefined,
    creds: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  ) {
    const options: grpc.ChannelOptions = {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      'grpc.keepalive_time_ms': 20_000,
      // HTTP/2 receive window for what the gateway sends (BatchReadBlobs answers): the default 64 KiB let one
      // window of bytes through per event-loop round trip, ~60 MB/s on loopback.
      'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
    };
    this.runtimes = new pkg.Runtimes(address, creds, options);
    // Share the one connection: a second client with the same options would open a second channel.
    this.cas = new pkg.ContentAddressableStorage(address, creds, { ...options, channelOverride: this.runtimes.getChannel() });
  }

  private metadata(runtimeId?: string): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${this.token}`);
    if (runtimeId) md.set('runtime-id', runtimeId);
    return md;
  }

  private unary<Req, Res>(client: grpc.Client, method: string, req: Req, timeoutMs: number, waitForReady = false): Promise<Res> {
    const fn = (client as unknown as Record<string, Unary<Req, Res>>)[method] as Unary<Req, Res>;
    return new Promise((resolve, reject) => {
      fn.call(client, req, this.metadata(this.runtimeId), { deadline: Date.now() + timeoutMs, waitForReady }, (err, res) => {
        if (err) reject(err);
        else resolve(res as Res);
      });
    });
  }

  /** waitForReady: keep trying to connect until the deadline instead of failing at the first refusal. */
  async register(
    req: Omit<RegisterRequestInit, 'capabilities'>,
    timeoutMs = CONTROL_DEADLINE_MS,
    waitForReady = false,
  ): Promise<RegisterResponse> {
    this.runtimeId = '';
    const hello: RegisterRequestInit = { ...req, capabilities: RUNTIME_CAPABILITIES };
    const res = await this.unary<RegisterRequestInit, RegisterResponse>(this.runtimes, 'register', hello, timeoutMs, waitForReady);
    // A gateway older than the hello answers without capabilities: say so rather than guess its limits.
    this.agreed = agree(RUNTIME_CAPABILITIES, res.capabilities, `the gateway at ${this.address}`);
    this.runtimeId = res.runtimeId;
    return res;
  }

  heartbeat(req: HeartbeatRequest): Promise<HeartbeatResponse> {
    return this.unary(this.runtimes, 'heartbeat', req, CONTROL_DEADLINE_MS);
  }

  async findMissingBlobs(digests: PbDigest[]): Promise<PbDigest[]> {
    if (digests.length === 0) return [];
    const req = { blobDigests: digests };
    const res = await this.unary<unknown, FindMissingBlobsResponse>(this.cas, 'findMissingBlobs', req, BLOB_DEADLINE_MS);
    return res.missingBlobDigests;
  }

  batchUpdateBlobs(requests: { digest: PbDigest; data: Buffer }[]): Promise<BatchUpdateBlobsResponse> {
    return this.unary(this.cas, 'batchUpdateBlobs', { requests }, BLOB_DEADLINE_MS);
  }

  batchReadBlobs(digests: PbDigest[]): Promise<BatchReadBlobsResponse> {
    return this.unary(this.cas, 'batchReadBlobs', { digests }, BLOB_DEADLINE_MS);
  }

  getBlobUrls(digests: PbDigest[]): Promise<GetBlobUrlsResponse> {
    return this.unary(this.cas, 'getBlobUrls', { digests }, CONTROL_DEADLINE_MS);
  }

  openWork(runtimeId: string): WorkStream {
    type WorkCall = grpc.ClientDuplexStream<RuntimeMessage, GatewayMessage>;
    const client = this.runtimes as unknown as { work(md: grpc.Metadata): WorkCall };
    return new WorkStream(client.work(this.metadata(runtimeId)));
  }

  close(): void {
    this.runtimes.close();
    this.cas.close();
  }
}

/**
 * The Work stream: GatewayMessages come out as 'message'; CellEvents go in through send(), in order,
 * honouring backpressure (write() false → wait for 'drain'). Emits 'closed' once, with the reason.
 */
export class WorkStream extends EventEmitter {
  private tail: Promise<void> = Promise.resolve();
  private waitingForDrain = false;
  private closed = false;

  constructor(private readonly call: grpc.ClientDuplexStream<RuntimeMessage, GatewayMessage>) {
    super();
    call.on('data', (msg: GatewayMessage) => this.emit('message', msg));
    call.on('error', (err: grpc.ServiceError) => this.close(`${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`));
    call.on('end', () => this.close('the gateway ended the stream'));
  }

  /** True while events wait for the stream to drain: producers should pause until `drained()`. */
  get congested(): boolean {
    return this.waitingForDrain;
  }

  /** Resolves once every event sent so far has been handed to gRPC. */
  drained(): Promise<void> {
    return this.tail;
  }

  send(event: CellEvent): Promise<void> {
    this.tail = this.tail.then(
      () =>
        new Promise<void>((resolve) => {
          if (this.closed) return resolve();
          const flushed = this.call.write({ event });
          if (flushed) return resolve();
          this.waitingForDrain = true;
          // A 'closed' stream never drains; don't wait forever for it.
          const done = (): void => {
            this.waitingForDrain = false;
            this.call.off('drain', done);
            this.off('closed', done);
            resolve();
          };
          this.call.on('drain', done);
          this.once('closed', done);
        }),
    );
    return this.tail;
  }

  /** The slots the other gateways' runs hold (slotArbiter.ts), in order with the events. */
  sendSlotsTaken(slots: number[]): void {
    this.tail = this.tail.then(() => {
      if (!this.closed) this.call.write({ slotsTaken: { slots } });
    });
  }

  end(): void {
    if (this.closed) return;
    this.call.end();
    this.call.cancel();
    this.close('the runtime closed the stream');
  }

  private close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('closed', reason);
  }
}
