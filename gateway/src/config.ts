// Command line and environment of the gateway process.
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { BlobStoreChoice, MetadataChoice, StoreUrlError, parseMetadata, parseStore } from './stores/storeUrl.js';

export interface GatewayConfig {
  host: string;
  /** 0 = let the OS pick a free port. */
  port: number;
  grpcPort: number;
  dataDir: string;
  token: string;
  /** True when no KERNELHOP_TOKEN was given and the token was made here (it must then be shown). */
  tokenGenerated: boolean;
  /** The user the token belongs to: the gateway's admin (KERNELHOP_USER; default "admin"). */
  adminUser?: string;
  /** Where to write a runtime token for a runtime started next to the gateway (--runtime-token-file). */
  runtimeTokenFile?: string;
  /** --store / --s3-endpoint: the directory under --data when absent. */
  blobStore?: BlobStoreChoice;
  /** --metadata: SQLite under --data when absent. */
  metadataStore?: MetadataChoice;
  /** How long a session's worker stays warm on its slot after a cell (--warm-grace; seconds, 0 = never). */
  warmGraceS?: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_WS_PORT = 8731;
export const DEFAULT_GRPC_PORT = 8732;
export const DEFAULT_ADMIN_USER = 'admin';
export const DEFAULT_WARM_GRACE_S = 60;

export function defaultDataDir(env: NodeJS.ProcessEnv): string {
  return env.KERNELHOP_HOME && env.KERNELHOP_HOME !== '' ? env.KERNELHOP_HOME : path.join(os.homedir(), '.kernelhop');
}

export const USAGE = `usage: kernelhop gateway [--host H] [--port P] [--grpc-port G] [--data DIR] [--runtime-token-file F]
                         [--store s3://BUCKET/PREFIX [--s3-endpoint URL]] [--metadata postgres://...]
                         [--warm-grace S]

  --host H         address to listen on (default ${DEFAULT_HOST}; 0.0.0.0 for runtimes on other hosts)
  --port P         WebSocket port for kernels and JupyterLab (default ${DEFAULT_WS_PORT}; 0 picks a free one)
  --grpc-port G    gRPC port for runtimes (default ${DEFAULT_GRPC_PORT})
  --data DIR       blob store, SQLite database, gateway.json and admin-token (default $KERNELHOP_HOME or ~/.kernelhop)
  --runtime-token-file F
                   write a runtime token to F (mode 0600; kept while it stays live) for a runtime on this host
  --store s3://BUCKET/PREFIX
                   keep blobs in an S3-compatible bucket (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
                   AWS_REGION, or any source the AWS SDK reads); default: DIR/cas
  --s3-endpoint URL
                   a MinIO, Ceph, R2 or other S3-compatible server (path-style), e.g. http://127.0.0.1:9000
  --metadata postgres://USER:PASSWORD@HOST:PORT/DB
                   keep runs, runtimes and refs in PostgreSQL (migrated on start); default: SQLite in DIR
  --warm-grace S   seconds a session's worker stays warm on its GPU after a cell (default ${DEFAULT_WARM_GRACE_S}; 0 = never);
                   a run of another session that finds no free GPU evicts the worker idle the longest at once

environment:
  KERNELHOP_TOKEN  the admin's token (default: a new one, printed; also written to DIR/admin-token)
  KERNELHOP_USER   the admin's user name (default ${DEFAULT_ADMIN_USER})`;

/** True when the command line asks for the usage text. */
export function wantsHelp(argv: string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}

export function loadConfig(argv: string[], env: NodeJS.ProcessEnv): GatewayConfig {
  let values: {
    host?: string;
    port?: string;
    'grpc-port'?: string;
    data?: string;
    'runtime-token-file'?: string;
    store?: string;
    's3-endpoint'?: string;
    metadata?: string;
    'warm-grace'?: string;
  };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        host: { type: 'string' },
        port: { type: 'string' },
        'grpc-port': { type: 'string' },
        data: { type: 'string' },
        'runtime-token-file': { type: 'string' },
        store: { type: 'string' },
        's3-endpoint': { type: 'string' },
        metadata: { type: 'string' },
        'warm-grace': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new ConfigError(`${(e as Error).message}\n\n${USAGE}`);
  }
  const envToken = env.KERNELHOP_TOKEN;
  const tokenGenerated = envToken === undefined || envToken === '';
  return {
    host: values.host ?? DEFAULT_HOST,
    port: parsePort(values.port, DEFAULT_WS_PORT, '--port'),
    grpcPort: parsePort(values['grpc-port'], DEFAULT_GRPC_PORT, '--grpc-port'),
    dataDir: path.resolve(values.data ?? defaultDataDir(env)),
    token: tokenGenerated ? randomBytes(32).toString('base64url') : (envToken as string),
    tokenGenerated,
    adminUser: parseUser(env.KERNELHOP_USER),
    runtimeTokenFile: values['runtime-token-file'] === undefined ? undefined : path.resolve(values['runtime-token-file']),
    warmGraceS: parseSeconds(values['warm-grace'], DEFAULT_WARM_GRACE_S, '--warm-grace'),
    ...parseStores(values.store, values['s3-endpoint'], values.metadata),
  };
}

function parseStores(
  store: string | undefined,
  endpoint: string | undefined,
  metadata: string | undefined,
): { blobStore: BlobStoreChoice; metadataStore: MetadataChoice } {
  try {
    return { blobStore: parseStore(store, endpoint), metadataStore: parseMetadata(metadata) };
  } catch (e) {
    if (e instanceof StoreUrlError) throw new ConfigError(e.message);
    throw e;
  }
}

function parseUser(text: string | undefined): string {
  if (text === undefined || text === '') return DEFAULT_ADMIN_USER;
  if (!/^[a-z][a-z0-9_.-]{0,31}$/.test(text)) {
    throw new ConfigError(`KERNELHOP_USER ${JSON.stringify(text)}: 1-32 lowercase letters, digits, _ . -, starting with a letter`);
  }
  return text;
}

function parseSeconds(text: string | undefined, fallback: number, flag: string): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < 0) throw new ConfigError(`${flag} ${JSON.stringify(text)}: expected seconds, 0 or more`);
  return n;
}

function parsePort(text: string | undefined, fallback: number, flag: string): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 65535) {
    throw new ConfigError(`${flag} ${JSON.stringify(text)} is not a port number (0-65535; 0 picks a free one)`);
  }
  return n;
}
