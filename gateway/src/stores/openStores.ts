// Opens every store the configuration names: the embedded default under --data (a directory and kernelhop.db), or S3
// for blobs and one PostgreSQL for all the rest (metadata, users and snapshots, runtime tokens, usage, user limits).
import * as path from 'node:path';
import { DiskBlobStore, SweepableBlobStore } from '../blobStore.js';
import { GatewayConfig } from '../config.js';
import { Log } from '../log.js';
import { MetadataStore, SqliteMetadataStore } from '../metadataStore.js';
import { RuntimeTokenStore, SqliteRuntimeTokens } from '../runtimeTokens.js';
import { SqliteUserLimits, UserLimits } from '../runs/userLimits.js';
import { SnapshotStore, SqliteSnapshotStore } from '../snapshotStore.js';
import { SqliteUsageLedger, UsageLedger } from '../usage.js';

export interface OpenedStores {
  store: SweepableBlobStore;
  metadata: MetadataStore;
  snapshots: SnapshotStore;
  runtimeTokens: RuntimeTokenStore;
  usage: UsageLedger;
  limits: UserLimits;
  /** Closes them all (the metadata's pending writes first). */
  close(): Promise<void>;
}

type Rows = Omit<OpenedStores, 'store' | 'close'>;

/** The AWS SDK and node-postgres are loaded only when chosen: the embedded default starts without them. */
export async function openStores(config: GatewayConfig, log: Log = () => undefined): Promise<OpenedStores> {
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
  let rows: Rows;
  let closeRows: () => Promise<void>;
  try {
    if (config.metadataStore?.kind === 'postgres') {
      ({ rows, close: closeRows } = await openPostgresStores(config.metadataStore.url, store, log));
    } else {
      ({ rows, close: closeRows } = openSqliteStores(path.join(config.dataDir, 'kernelhop.db'), store));
    }
  } catch (e) {
    closeStore();
    throw e;
  }
  return {
    store,
    ...rows,
    close: async () => {
      await closeRows();
      closeStore();
    },
  };
}

/** Each store its own connection to the one file (WAL: they read while one writes). */
function openSqliteStores(file: string, store: SweepableBlobStore): { rows: Rows; close(): Promise<void> } {
  const rows: Rows = {
    metadata: new SqliteMetadataStore(file, store),
    snapshots: new SqliteSnapshotStore(file),
    runtimeTokens: new SqliteRuntimeTokens(file),
    usage: new SqliteUsageLedger(file),
    limits: new SqliteUserLimits(file),
  };
  return { rows, close: () => closeAll(rows) };
}

/** One pool for them all (migrated once, on open); the user limits' listener has a connection of its own. */
async function openPostgresStores(url: string, store: SweepableBlobStore, log: Log): Promise<{ rows: Rows; close(): Promise<void> }> {
  const [{ openPostgres }, { PostgresMetadataStore }, { PostgresSnapshotStore }, { PostgresRuntimeTokens }, { PostgresUsageLedger }, { PostgresUserLimits }] =
    await Promise.all([
      import('./postgres.js'),
      import('./postgresMetadataStore.js'),
      import('./postgresSnapshotStore.js'),
      import('./postgresRuntimeTokens.js'),
      import('./postgresUsageLedger.js'),
      import('./postgresUserLimits.js'),
    ]);
  const pool = await openPostgres(url);
  let limits: UserLimits;
  try {
    limits = await PostgresUserLimits.open(pool, url, log);
  } catch (e) {
    await pool.end();
    throw e;
  }
  const rows: Rows = {
    metadata: new PostgresMetadataStore(pool, store),
    snapshots: new PostgresSnapshotStore(pool),
    runtimeTokens: new PostgresRuntimeTokens(pool),
    usage: new PostgresUsageLedger(pool),
    limits,
  };
  return {
    rows,
    close: async () => {
      await closeAll(rows);
      await pool.end();
    },
  };
}

async function closeAll(rows: Rows): Promise<void> {
  // The metadata first: its writes still pending go out before the rest closes.
  await rows.metadata.close();
  await Promise.all([rows.snapshots.close(), rows.runtimeTokens.close(), rows.usage.close(), rows.limits.close()]);
}
