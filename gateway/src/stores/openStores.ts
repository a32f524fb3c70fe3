// Opens the blob and metadata stores the configuration names: the embedded default under --data, or S3 and Postgres.
import * as path from 'node:path';
import { DiskBlobStore, SweepableBlobStore } from '../blobStore.js';
import { GatewayConfig } from '../config.js';
import { MetadataStore, SqliteMetadataStore } from '../metadataStore.js';

export interface OpenedStores {
  store: SweepableBlobStore;
  metadata: MetadataStore;
  /** Closes both (the metadata's pending writes first). */
  close(): Promise<void>;
}

/** The AWS SDK and node-postgres are loaded only when chosen: the embedded default starts without them. */
export async function openStores(config: GatewayConfig): Promise<OpenedStores> {
  const choice = config.blobStore ?? { kind: 'disk' };
  let store: SweepableBlobStore;
  let closeStore = (): void => undefined;
  if (choice.kind === 's3') {
    const { S3BlobStore } = await import('./s3BlobStore.js');
    const s3 = await S3BlobStore.open({ location: choice.location, endpoint: choice.endpoint });
    closeStore = () => s3.close();
    store = s3;
  } else {
    store = await DiskBlobStore.open(path.join(config.dataDir, 'cas'));
  }
  let metadata: MetadataStore;
  try {
    if (config.metadataStore?.kind === 'postgres') {
      const { PostgresMetadataStore } = await import('./postgresMetadataStore.js');
      metadata = await PostgresMetadataStore.open(config.metadataStore.url, store);
    } else {
      metadata = new SqliteMetadataStore(path.join(config.dataDir, 'kernelhop.db'), store);
    }
  } catch (e) {
    closeStore();
    throw e;
  }
  return {
    store,
    metadata,
    close: async () => {
      await metadata.close();
      closeStore();
    },
  };
}
