// Command line and environment of the gateway process.
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { TlsSetting } from './tls.js';
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
  /** Runtimes started on demand (--provider); undefined = only the runtimes that register by themselves. */
  elastic?: ElasticConfig;
  /** TLS on both listeners (tls.ts); off only on loopback unless `insecure`. */
  tls?: TlsSetting;
  insecure?: boolean;
  /** JupyterHub's API: tokens the gateway does not know are checked there (hubIdentity.ts). */
  hubApiUrl?: string;
  /** --store / --s3-endpoint: the directory under --data when absent. */
  blobStore?: BlobStoreChoice;
  /** --metadata: SQLite under --data when absent. */
  metadataStore?: MetadataChoice;
  /** How long a session's worker stays warm on its slot after a cell (--warm-grace; seconds, 0 = never). */
  warmGraceS?: number;
  /** How often the gateway beats in the metadata database (--liveness; seconds, above 0); runs/liveness.ts. */
  livenessS?: number;
}

export interface ElasticConfig {
  provider: { kind: 'command'; command: string } | { kind: 'kubernetes'; template: string; namespace: string; kubeconfig?: string };
  classes: string[];
  /** The gRPC address provided runtimes are told; undefined = the one the gateway listens on. */
  runtimeGateway?: string;
  scaleUpAfterMs: number;
  idleReleaseMs: number;
  maxPerClass: number;
  registerTimeoutMs: number;
  /** --target-utilization: keep slots at (running + waiting) / this; undefined = scale on waits only. */
  targetUtilization?: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_WS_PORT = 8731;
export const DEFAULT_GRPC_PORT = 8732;
export const DEFAULT_ADMIN_USER = 'admin';
export const DEFAULT_SCALE_UP_S = 10;
export const DEFAULT_IDLE_RELEASE_S = 300;
export const DEFAULT_MAX_RUNTIMES = 4;
export const DEFAULT_REGISTER_TIMEOUT_S = 300;
export const DEFAULT_WARM_GRACE_S = 60;
export const DEFAULT_LIVENESS_S = 5;

export function defaultDataDir(env: NodeJS.ProcessEnv): string {
  return env.KERNELHOP_HOME && env.KERNELHOP_HOME !== '' ? env.KERNELHOP_HOME : path.join(os.homedir(), '.kernelhop');
}

export const USAGE = `usage: kernelhop gateway [--host H] [--port P] [--grpc-port G] [--data DIR] [--runtime-token-file F]
                         [--tls auto [--tls-san NAME ...] | --tls-cert F --tls-key F] [--insecure]
                         [--jupyterhub [--hub-api URL]]
                         [--store s3://BUCKET/PREFIX [--s3-endpoint URL]] [--metadata postgres://...]
                         [--warm-grace S] [--liveness S]

  --host H         address to listen on (default ${DEFAULT_HOST}; 0.0.0.0 for runtimes on other hosts)
  --port P         WebSocket port for kernels and JupyterLab (default ${DEFAULT_WS_PORT}; 0 picks a free one)
  --grpc-port G    gRPC port for runtimes (default ${DEFAULT_GRPC_PORT})
  --data DIR       blob store, SQLite database, gateway.json and admin-token (default $KERNELHOP_HOME or ~/.kernelhop)
  --runtime-token-file F
                   write a runtime token to F (mode 0600; kept while it stays live) for a runtime on this host
  --tls auto       TLS on both ports with a CA and a certificate made under DIR/tls (kernels and runtimes on other
                   hosts verify with DIR/tls/ca.pem, or pin the fingerprint the gateway prints)
  --tls-san NAME   with --tls auto, one more name or address clients reach this host by (repeatable)
  --tls-cert F --tls-key F
                   TLS with your own certificate (PEM, chain after it) and its key
  --insecure       listen on a non-loopback address without TLS (tokens and state then cross the network in clear)
  --jupyterhub     users are JupyterHub's: a kernel's JUPYTERHUB_API_TOKEN is checked at the Hub's /user (cached
                   30 s), its user becomes a kernelhop user on first sight, admin as the Hub says
  --hub-api URL    the Hub's API (default $JUPYTERHUB_API_URL, which the Hub sets for its services)
  --store s3://BUCKET/PREFIX
                   keep blobs in an S3-compatible bucket (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
                   AWS_REGION, or any source the AWS SDK reads); default: DIR/cas
  --s3-endpoint URL
                   a MinIO, Ceph, R2 or other S3-compatible server (path-style), e.g. http://127.0.0.1:9000
  --metadata postgres://USER:PASSWORD@HOST:PORT/DB
                   keep runs, runtimes and refs in PostgreSQL (migrated on start); default: SQLite in DIR
  --warm-grace S   seconds a session's worker stays warm on its GPU after a cell (default ${DEFAULT_WARM_GRACE_S}; 0 = never);
                   a run of another session that finds no free GPU evicts the worker idle the longest at once
  --liveness S     seconds between the gateway's beats in the metadata database (default ${DEFAULT_LIVENESS_S}); a gateway
                   silent for 3 of its beats is lapsed: another gateway on the database (or this one, restarted)
                   ends its runs as gateway_lost and counts their GPU-seconds

elastic runtimes, started when runs wait and released when idle (scale to zero):
  --provider command|kubernetes
  --provider-command CMD   (command) run CMD per runtime, e.g. 'kernelhop runtime --class "$KERNELHOP_CLASS"';
                   it gets KERNELHOP_CLASS, KERNELHOP_GATEWAY, KERNELHOP_TOKEN (one runtime, once) and
                   KERNELHOP_RUNTIME_NAME, and is stopped (SIGTERM to its process group) on release
  --k8s-template F (kubernetes) a Pod manifest each runtime Pod is made from; --k8s-namespace NS (default
                   default), --k8s-kubeconfig F (default: in-cluster or $KUBECONFIG)
  --elastic-class C  a class the provider starts runtimes of (repeat for more; required with --provider)
  --runtime-gateway ADDR  the gRPC address provided runtimes reach this gateway at (default: --host:--grpc-port)
  --scale-up-after S   seconds a run waits before a runtime is asked for (default ${DEFAULT_SCALE_UP_S})
  --idle-release S     seconds a provided runtime may hold no run before it is released (default ${DEFAULT_IDLE_RELEASE_S})
  --max-runtimes N     provided runtimes per class at most (default ${DEFAULT_MAX_RUNTIMES})
  --register-timeout S seconds a provided runtime has to register (default ${DEFAULT_REGISTER_TIMEOUT_S})
  --target-utilization F  (0-1, e.g. 0.85) ask for runtimes before runs wait, to keep the class's slots at
                   (running + waiting) / F, and release an idle one only when the rest still do (pools of many
                   runtimes following a daily curve; docs/ARCHITECTURE.md, "Scheduling rules")

environment:
  KERNELHOP_TOKEN  the admin's token (default: a new one, printed; also written to DIR/admin-token)
  KERNELHOP_USER   the admin's user name (default ${DEFAULT_ADMIN_USER})`;

/** True when the command line asks for the usage text. */
export function wantsHelp(argv: string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}

export function loadConfig(argv: string[], env: NodeJS.ProcessEnv): GatewayConfig {
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        host: { type: 'string' },
        port: { type: 'string' },
        'grpc-port': { type: 'string' },
        data: { type: 'string' },
        'runtime-token-file': { type: 'string' },
        provider: { type: 'string' },
        'provider-command': { type: 'string' },
        'k8s-template': { type: 'string' },
        'k8s-namespace': { type: 'string' },
        'k8s-kubeconfig': { type: 'string' },
        'elastic-class': { type: 'string', multiple: true },
        'runtime-gateway': { type: 'string' },
        'scale-up-after': { type: 'string' },
        'idle-release': { type: 'string' },
        'max-runtimes': { type: 'string' },
        'register-timeout': { type: 'string' },
        'target-utilization': { type: 'string' },
        tls: { type: 'string' },
        'tls-san': { type: 'string', multiple: true },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        insecure: { type: 'boolean' },
        jupyterhub: { type: 'boolean' },
        'hub-api': { type: 'string' },
        store: { type: 'string' },
        's3-endpoint': { type: 'string' },
        metadata: { type: 'string' },
        'warm-grace': { type: 'string' },
        liveness: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new ConfigError(`${(e as Error).message}\n\n${USAGE}`);
  }
  const envToken = env.KERNELHOP_TOKEN;
  const tokenGenerated = envToken === undefined || envToken === '';
  const str = (name: string): string | undefined => values[name] as string | undefined;
  const tokenFile = str('runtime-token-file');
  const host = str('host') ?? DEFAULT_HOST;
  const tls = parseTls(values as TlsValues);
  const insecure = (values.insecure as boolean | undefined) ?? false;
  if (tls.mode === 'off' && !insecure && !isLoopback(host)) {
    throw new ConfigError(
      `refusing to listen on ${host} without TLS: tokens and kernel state would cross the network in clear. ` +
        'Pass --tls auto (a CA and a certificate made under the data directory; give other hosts DATA/tls/ca.pem ' +
        'as KERNELHOP_CA, or the fingerprint the gateway prints as KERNELHOP_FINGERPRINT), or --tls-cert F --tls-key F ' +
        'with your own, or --insecure on a network you trust.',
    );
  }
  return {
    host,
    tls,
    insecure,
    hubApiUrl: parseHub((values.jupyterhub as boolean | undefined) ?? false, str('hub-api'), env.JUPYTERHUB_API_URL),
    port: parsePort(str('port'), DEFAULT_WS_PORT, '--port'),
    grpcPort: parsePort(str('grpc-port'), DEFAULT_GRPC_PORT, '--grpc-port'),
    dataDir: path.resolve(str('data') ?? defaultDataDir(env)),
    token: tokenGenerated ? randomBytes(32).toString('base64url') : (envToken as string),
    tokenGenerated,
    adminUser: parseUser(env.KERNELHOP_USER),
    runtimeTokenFile: tokenFile === undefined ? undefined : path.resolve(tokenFile),
    elastic: parseElastic(values),
    warmGraceS: parseSeconds(str('warm-grace'), DEFAULT_WARM_GRACE_S, '--warm-grace'),
    livenessS: parseLiveness(str('liveness')),
    ...parseStores(str('store'), str('s3-endpoint'), str('metadata')),
  };
}

function parseElastic(values: Record<string, string | string[] | boolean | undefined>): ElasticConfig | undefined {
  const str = (name: string): string | undefined => values[name] as string | undefined;
  const kind = str('provider');
  const elasticFlags = ['provider-command', 'k8s-template', 'elastic-class', 'runtime-gateway', 'scale-up-after', 'idle-release', 'max-runtimes', 'register-timeout', 'target-utilization'];
  if (kind === undefined) {
    const stray = elasticFlags.find((f) => values[f] !== undefined);
    if (stray !== undefined) throw new ConfigError(`--${stray} needs --provider command|kubernetes`);
    return undefined;
  }
  let provider: ElasticConfig['provider'];
  if (kind === 'command') {
    const command = str('provider-command');
    if (command === undefined || command.trim() === '') {
      throw new ConfigError(`--provider command needs --provider-command CMD, e.g. 'kernelhop runtime --class "$KERNELHOP_CLASS"'`);
    }
    provider = { kind, command };
  } else if (kind === 'kubernetes') {
    const template = str('k8s-template');
    if (template === undefined) throw new ConfigError('--provider kubernetes needs --k8s-template F: a Pod manifest for the runtimes');
    const kubeconfig = str('k8s-kubeconfig');
    provider = { kind, template: path.resolve(template), namespace: str('k8s-namespace') ?? 'default', ...(kubeconfig === undefined ? {} : { kubeconfig: path.resolve(kubeconfig) }) };
  } else {
    throw new ConfigError(`--provider ${JSON.stringify(kind)}: choose command or kubernetes`);
  }
  const classes = (values['elastic-class'] as string[] | undefined) ?? [];
  if (classes.length === 0) throw new ConfigError('--provider needs --elastic-class C for each GPU class it may start runtimes of');
  return {
    provider,
    classes,
    runtimeGateway: str('runtime-gateway'),
    scaleUpAfterMs: parseSeconds(str('scale-up-after'), DEFAULT_SCALE_UP_S, '--scale-up-after') * 1000,
    idleReleaseMs: parseSeconds(str('idle-release'), DEFAULT_IDLE_RELEASE_S, '--idle-release') * 1000,
    maxPerClass: parseCount(str('max-runtimes'), DEFAULT_MAX_RUNTIMES, '--max-runtimes'),
    registerTimeoutMs: parseSeconds(str('register-timeout'), DEFAULT_REGISTER_TIMEOUT_S, '--register-timeout') * 1000,
    ...targetUtilization(str('target-utilization')),
  };
}

function targetUtilization(text: string | undefined): { targetUtilization?: number } {
  if (text === undefined) return {};
  const n = Number(text);
  if (text.trim() === '' || !(n > 0 && n <= 1)) {
    throw new ConfigError(`--target-utilization ${JSON.stringify(text)} must be a fraction above 0 and at most 1, e.g. 0.85`);
  }
  return { targetUtilization: n };
}

function parseSeconds(text: string | undefined, fallback: number, flag: string): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < 0) throw new ConfigError(`${flag} ${JSON.stringify(text)} is not a number of seconds (0 or more)`);
  return n;
}

function parseLiveness(text: string | undefined): number {
  if (text === undefined) return DEFAULT_LIVENESS_S;
  const n = Number(text);
  // Beats are timers of whole milliseconds; a beat of 0 would never let a gateway be judged alive.
  if (text.trim() === '' || !Number.isFinite(n) || n < 0.001) {
    throw new ConfigError(`--liveness ${JSON.stringify(text)} is not a number of seconds above 0 (e.g. ${DEFAULT_LIVENESS_S}): how often this gateway beats`);
  }
  return n;
}

function parseCount(text: string | undefined, fallback: number, flag: string): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1) throw new ConfigError(`${flag} ${JSON.stringify(text)} must be a whole number, 1 or more`);
  return n;
}

interface TlsValues {
  tls?: string;
  'tls-san'?: string[];
  'tls-cert'?: string;
  'tls-key'?: string;
}

function parseTls(values: TlsValues): TlsSetting {
  const cert = values['tls-cert'];
  const key = values['tls-key'];
  const names = values['tls-san'] ?? [];
  if (values.tls !== undefined && values.tls !== 'auto') {
    throw new ConfigError(`--tls ${JSON.stringify(values.tls)}: the one value is auto (or give --tls-cert F --tls-key F)`);
  }
  if (values.tls === 'auto') {
    if (cert !== undefined || key !== undefined) throw new ConfigError('--tls auto makes its own certificate: drop --tls-cert/--tls-key, or drop --tls auto');
    return { mode: 'auto', names };
  }
  if (names.length > 0) throw new ConfigError('--tls-san names go into the certificate --tls auto makes: add --tls auto');
  if ((cert === undefined) !== (key === undefined)) throw new ConfigError('--tls-cert and --tls-key go together: give both');
  if (cert !== undefined && key !== undefined) return { mode: 'files', certFile: path.resolve(cert), keyFile: path.resolve(key) };
  return { mode: 'off' };
}

function parseHub(on: boolean, flag: string | undefined, fromHub: string | undefined): string | undefined {
  if (!on) {
    if (flag !== undefined) throw new ConfigError('--hub-api goes with --jupyterhub: add --jupyterhub');
    return undefined;
  }
  const url = flag ?? fromHub;
  if (url === undefined || url === '') {
    throw new ConfigError('--jupyterhub needs the Hub\'s API: pass --hub-api http://HUB:8081/hub/api, or run the gateway as a Hub service (which sets JUPYTERHUB_API_URL)');
  }
  if (!/^https?:\/\/[^/]+/.test(url)) throw new ConfigError(`--hub-api ${JSON.stringify(url)}: expected http(s)://HOST:PORT/hub/api`);
  return url;
}

/** Addresses no other host can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
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

function parsePort(text: string | undefined, fallback: number, flag: string): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 65535) {
    throw new ConfigError(`${flag} ${JSON.stringify(text)} is not a port number (0-65535; 0 picks a free one)`);
  }
  return n;
}
