// The runtime's parts, for embedding and tests; `main.ts` is the daemon.
export { BlobError, ChunkCache } from './chunkCache.js';
export { ConfigError, RuntimeConfig, USAGE, parseArgs } from './config.js';
export { GatewayClient, MAX_BATCH_BYTES, WorkStream } from './gatewayClient.js';
export { classOfDeviceName, resolveClasses } from './gpuClasses.js';
export { parseDevices, queryDevices, resolveSlots } from './devices.js';
export { loadKernelhopProto } from './proto.js';
export { EventSink, Run, RunnerDeps, toCellEvent } from './runner.js';
export { Runtime, RuntimeOptions } from './runtime.js';
export { Sandbox, SandboxKind, WorkerSpace, withoutCredentials } from './sandbox.js';
export { RunCommand, WorkerEvent, WorkerOptions, WorkerProcess } from './worker.js';
export { PoolOptions, WorkerPool } from './workerPool.js';
