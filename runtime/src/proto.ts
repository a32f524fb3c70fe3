// The gateway ↔ runtime contract (proto/kernelhop/v1/runtime.proto) in the runtime's view: camelCase fields, as
// @kernelhop/proto loads it, with the message types proto-loader-gen-types generated for those options.
import type { Assignment as GenAssignment } from '@kernelhop/proto/grpc/Assignment';
import type { BatchReadBlobsResponse as GenBatchRead } from '@kernelhop/proto/grpc/BatchReadBlobsResponse';
import type { BatchUpdateBlobsResponse as GenBatchUpdate } from '@kernelhop/proto/grpc/BatchUpdateBlobsResponse';
import type { CellEvent as GenCellEvent } from '@kernelhop/proto/grpc/CellEvent';
import type { GatewayMessage as GenGatewayMessage } from '@kernelhop/proto/grpc/GatewayMessage';
import type { GetBlobUrlsResponse as GenGetBlobUrls } from '@kernelhop/proto/grpc/GetBlobUrlsResponse';
import type { RegisterResponse as GenRegisterResponse } from '@kernelhop/proto/grpc/RegisterResponse';
import type { RuntimeMessage as GenRuntimeMessage } from '@kernelhop/proto/grpc/RuntimeMessage';

export { loadRuntimeProto as loadKernelhopProto } from '@kernelhop/proto';
export type { CellEventInit } from '@kernelhop/proto/grpc/CellEvent';
export type { Digest as PbDigest } from '@kernelhop/proto/grpc/Digest';
export type { FindMissingBlobsResponse } from '@kernelhop/proto/grpc/FindMissingBlobsResponse';
export type { GpuClass as PbGpuClass } from '@kernelhop/proto/grpc/GpuClass';
export type { HeartbeatRequestInit as HeartbeatRequest } from '@kernelhop/proto/grpc/HeartbeatRequest';
export type { HeartbeatResponse } from '@kernelhop/proto/grpc/HeartbeatResponse';
export type { RegisterRequest, RegisterRequestInit } from '@kernelhop/proto/grpc/RegisterRequest';
export type { Slot as PbSlot } from '@kernelhop/proto/grpc/Slot';
export type { RuntimeMessageInit } from '@kernelhop/proto/grpc/RuntimeMessage';

/**
 * A message as loadRuntimeProto decodes it (`objects: true`): a message field left unset comes as its default, never
 * null, so the generated `| null` is dropped; a oneof member stays optional (absent unless it is the one set).
 */
export type Decoded<T> = T extends Buffer
  ? T
  : T extends Array<infer U>
    ? Array<Decoded<U>>
    : T extends object
      ? { [K in keyof T]: Decoded<Exclude<T[K], null>> }
      : T;

export type Assignment = Decoded<GenAssignment>;
export type BatchReadBlobsResponse = Decoded<GenBatchRead>;
export type BatchUpdateBlobsResponse = Decoded<GenBatchUpdate>;
export type CellEvent = Decoded<GenCellEvent>;
export type GatewayMessage = Decoded<GenGatewayMessage>;
export type RegisterResponse = Decoded<GenRegisterResponse>;
export type RuntimeMessage = Decoded<GenRuntimeMessage>;
export type GetBlobUrlsResponse = Decoded<GenGetBlobUrls>;

/** The loaded package: its two service client constructors. */
export type KernelhopPackage = ReturnType<typeof import('@kernelhop/proto').loadRuntimeProto>;
