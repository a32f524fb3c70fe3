export { TokenAuth } from './auth.js';
export { BlobStore, DiskBlobStore, MAX_BLOB_BYTES, PutResult, verifyBlob } from './blobStore.js';
export { GatewayConfig, loadConfig } from './config.js';
export { GrpcApi, PROTO_PATH, loadProto } from './grpcApi.js';
export { MetadataStore, RefError, SqliteMetadataStore } from './metadataStore.js';
export { Scheduler } from './scheduler.js';
export { Gateway, GatewayTuning, startGateway } from './server.js';
export { WsApi } from './wsApi.js';
