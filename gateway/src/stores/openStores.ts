// Opens the blob and metadata stores the configuration names: the embedded default under --data, or S3 and Postgres.
import * as path from 'node:path';
import { DiskBlobStore, SweepableBlobStore } from '../blobStore.js';
import { GatewayConfig } from '../config.js';
import { MetadataStore, SqliteMetadataStore } from '../metadataStore.js';
import { PostgresMetadataStore } from './postgresMetadataStore.js';
import { S3BlobStore } from './s3BlobStore.js';

export interface OpenedStores {
  store: SweepableBlobStore;
  metadata: MetadataStore;
  /** Closes both (the metadata's pending writes first). */
  close(): Promise<void>;
}

export async function openStores(config: GatewayConfig): Promise<OpenedStores> {
  const choice = config.blobStore ?? { kind: 'disk' };
  const store =
    choice.kind === 's3'
      ? await S3BlobStore.open({ location: choice.location, endpoint: choice.endpoint })
      : await DiskBlobStore.open(path.join(config.dataDir, 'cas'));
  let metadata: MetadataStore;
  try {
    metadata =
      config.metadataStore?.kind === 'postgres'
        ? await PostgresMetadataStore.open(config.metadataStore.url, store)
        : new SqliteMetadataStore(path.join(config.dataDir, 'kernelhop.db'), store);
  } catch (e) {
    if (store instanceof S3BlobStore) store.close();
    throw e;
  }
  return {
    store,
    metadata,
    close: async () => {
      await metadata.close();
      if (store instanceof S3BlobStore) store.close();
    },
  };
}
