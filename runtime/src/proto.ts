// The gateway ↔ runtime contract (proto/kernelhop/v1/runtime.proto), loaded at run time, with the
// message shapes proto-loader produces for our options (camelCase fields, int64 as number, oneof `kind`).
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

// dist/src/proto.js → repository root → proto/
export const PROTO_PATH = path.resolve(__dirname, '..', '..', '..', 'proto', 'kernelhop', 'v1', 'runtime.proto');

export interface PbDigest {
  hash: string;
  sizeBytes: number;
}
export interface PbStatus {
  code: number;
  message: string;
}
export interface PbGpuClass {
  name: string;
  simulated: boolean;
}
export interface PbSlot {
  index: number;
  device: string;
  name: string;
  memoryMib: number;
}
export interface RegisterRequest {
  name: string;
  classes: PbGpuClass[];
  capacity: number;
  version: string;
  slots: PbSlot[];
}
export interface RegisterResponse {
  runtimeId: string;
  heartbeatIntervalMs: number;
}
export interface HeartbeatRequest {
  runtimeId: string;
  busy: number;
  warmWorkers: number;
}
export interface HeartbeatResponse {
  known: boolean;
}
export interface Assignment {
  runId: string;
  session: string;
  gpuClass: string;
  code: string;
  snapshot: PbDigest | null;
  timeoutS: number;
  lazy: boolean;
  reach: string[];
  slot: number;
  warmGraceS: number;
}
export interface Cancel {
  runId: string;
  reason: string;
}
export interface GatewayMessage {
  assign?: Assignment | null;
  cancel?: Cancel | null;
  kind?: 'assign' | 'cancel';
}
export interface DisplayEvent {
  dataJson: string;
  metadataJson: string;
}
/** One CellEvent; exactly one of the optional fields is set (the proto's oneof). */
export interface CellEvent {
  runId: string;
  started?: { worker: string; warm: boolean };
  stream?: { name: string; text: string };
  display?: DisplayEvent;
  result?: DisplayEvent;
  error?: { ename: string; evalue: string; traceback: string[]; etype: string };
  done?: { status: string; snapshot: PbDigest; timingsJson: string };
  failed?: { code: string; message: string };
  progress?: { phase: string; doneBytes: number; totalBytes: number };
}
export interface RuntimeMessage {
  event: CellEvent;
}
export interface FindMissingBlobsResponse {
  missingBlobDigests: PbDigest[];
}
export interface BatchUpdateBlobsResponse {
  responses: { digest: PbDigest | null; status: PbStatus | null }[];
}
export interface BatchReadBlobsResponse {
  responses: { digest: PbDigest | null; data: Buffer; status: PbStatus | null }[];
}

export interface GetBlobUrlsResponse {
  responses: { digest: PbDigest | null; url: string; status: PbStatus | null }[];
}

export interface KernelhopPackage {
  Runtimes: grpc.ServiceClientConstructor;
  ContentAddressableStorage: grpc.ServiceClientConstructor;
}

export function loadKernelhopProto(): KernelhopPackage {
  const definition = protoLoader.loadSync(PROTO_PATH, {
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as { kernelhop: { v1: KernelhopPackage } };
  return loaded.kernelhop.v1;
}
