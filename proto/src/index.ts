// kernelhop's wire schema (proto/kernelhop/v1), generated: protobuf-es messages for the JSON links, proto-loader
// types for gRPC, the hello's capabilities, and the flattened-oneof JSON codec.
export * from './capabilities.js';
export * from './tagged.js';
export * from './grpc.js';
export * from './gen/es/kernelhop/v1/capabilities_pb.js';
export * from './gen/es/kernelhop/v1/events_pb.js';
export * from './gen/es/kernelhop/v1/gateway_pb.js';
export * from './gen/es/kernelhop/v1/worker_pb.js';
export * from './gen/es/kernelhop/v1/hop_display_pb.js';
export * as es_runtime from './gen/es/kernelhop/v1/runtime_pb.js';
