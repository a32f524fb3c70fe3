// Command-line options and their defaults; a bad option is an error naming the option and what it wants.
import * as os from 'node:os';
import * as path from 'node:path';
import { parseSize } from './cgroups.js';
import { TlsTrustError, normalizeFingerprint } from './tls.js';

export interface RuntimeConfig {
  /** The gateways this runtime serves (--gateway, repeatable or a comma list): it registers with each. */
  gateways: string[];
  /** Classes posed with --class; empty means "detect". */
  classOverrides: string[];
  /** Slots to offer (--gpus, or its older name --capacity); 1 when neither is given. */
  capacity: number;
  /** Whether --gpus/--capacity was given: a host with the device then offers its first `capacity` GPUs. */
  capacityGiven: boolean;
  warm: number;
  python: string;
  cache: string;
  name: string;
  sessionGraceS: number;
  /** The runtime token per gateway, in the order of `gateways` (one token given: the same for each). */
  tokens: string[];
  /** Serve one user only: workers may then run unsandboxed where this host cannot sandbox them. */
  singleUser: boolean;
  /** With --single-user only: workers unsandboxed even where this host could sandbox them (a trusted user's host,
   * or measuring what the sandbox costs: benchmarks/sandbox_cost.py). */
  noSandbox: boolean;
  /** Each worker's cgroup v2 memory.max in bytes (--worker-memory) and CPUs (--worker-cpus); null: no limit. */
  workerMemoryBytes: number | null;
  workerCpus: number | null;
  /** Only say whether workers can be sandboxed here (a JSON line) and exit: 0 when they can. */
  probeSandbox: boolean;
  /** Where the kernel's missing packages come from (packages.ts); none: pip's own configuration. */
  indexUrl: string | null;
  findLinks: string[];
  /** The gateway's CA (PEM) to verify its certificate against; TLS is on with it, a fingerprint or a wss:// URL. */
  ca: string | null;
  /** The gateway certificate's SHA-256, pinned instead of a CA. */
  fingerprint: string | null;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const USAGE = `usage: node runtime/dist/src/main.js --gateway URL|HOST:PORT [--class NAME ...] [--gpus N] [--warm N]
                                   [--python PATH] [--cache DIR] [--name NAME] [--session-grace SECONDS] [--token TOKEN]
                                   [--single-user [--no-sandbox]] [--worker-memory SIZE] [--worker-cpus N] [--probe-sandbox] [--index-url URL] [--find-links DIR ...]
                                   [--ca FILE | --fingerprint SHA256]

  --gateway URL|HOST:PORT  the gateway: the ws:// or wss:// URL it prints (the runtime asks it for its gRPC port),
                           or HOST:PORT of its gRPC port for runtimes (8732 by default). Repeatable, or a comma
                           list: the runtime registers with each and shares its slots among them
  --class NAME             a GPU class this runtime offers (repeatable); overrides detection with nvidia-smi,
                           and a class the host lacks is registered as simulated
  --gpus N                 slots to offer. A host with NVIDIA GPUs offers one slot per GPU (or per MIG instance)
                           that nvidia-smi reports, its first N with --gpus; on a host without the device,
                           --class NAME --gpus N poses N simulated GPUs (default 1), each worker seeing
                           CUDA_VISIBLE_DEVICES=its slot's index. --capacity N is its older name.
  --warm N                 Python workers kept started and ready (default 1)
  --python PATH            interpreter for workers (default $KERNELHOP_PYTHON, which the kernelhop command sets
                           to its own interpreter, else python3)
  --cache DIR              chunk cache (default $KERNELHOP_HOME/runtime-cache, KERNELHOP_HOME default ~/.kernelhop)
  --name NAME              name shown by the gateway (default the host name)
  --session-grace SECONDS  how long a session's worker stays warm for its next cell (default 60; 0 = never)
  --token TOKEN            a runtime token (default $KERNELHOP_TOKEN); an admin makes one with
                           \`kernelhop runtime-token create [--class C]\`. The gateway refuses the admin's and users' tokens.
                           With several gateways: one per gateway, in their order (repeatable or a comma list),
                           or one for all
  --single-user            this runtime serves one user: where workers cannot be sandboxed here (no bubblewrap,
                           no namespaces), run them unsandboxed instead of refusing to start
  --no-sandbox             with --single-user: run workers unsandboxed even where they could be sandboxed
  --worker-memory SIZE     each worker's memory limit (e.g. 16G), swap included; needs cgroup v2 with the
                           memory controller, else the runtime refuses to start and says why
  --worker-cpus N          each worker's CPU limit (e.g. 4 or 0.5 CPUs); needs cgroup v2 with the cpu controller
  --probe-sandbox          print whether workers can be sandboxed here as one JSON line, and exit (0: they can)
  --index-url URL          the package index the kernel's missing packages are installed from (default pip's own
                           configuration)
  --find-links DIR         a wheelhouse to install them from (repeatable); without --index-url it is the only source
  --ca FILE                TLS to the gateway, verified against this CA (default $KERNELHOP_CA; a gateway started
                           with --tls auto keeps it in DATA/tls/ca.pem)
  --fingerprint SHA256     TLS to the gateway, trusting only the certificate with this SHA-256 (default
                           $KERNELHOP_FINGERPRINT; the gateway prints it). A wss:// --gateway with neither uses the
                           system's CAs`;

export function parseArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  const home = env.KERNELHOP_HOME || path.join(os.homedir(), '.kernelhop');
  const config: RuntimeConfig = {
    gateways: [],
    classOverrides: [],
    capacity: 1,
    capacityGiven: false,
    warm: 1,
    python: env.KERNELHOP_PYTHON || 'python3',
    cache: path.join(home, 'runtime-cache'),
    name: os.hostname(),
    sessionGraceS: 60,
    tokens: [],
    singleUser: false,
    noSandbox: false,
    workerMemoryBytes: null,
    workerCpus: null,
    probeSandbox: false,
    indexUrl: null,
    findLinks: [],
    ca: env.KERNELHOP_CA ? path.resolve(env.KERNELHOP_CA) : null,
    fingerprint: null,
  };
  let fingerprint = env.KERNELHOP_FINGERPRINT || null;
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] as string;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new ConfigError(`${flag} needs a value\n\n${USAGE}`);
      return v;
    };
    switch (flag) {
      case '--gateway':
        config.gateways.push(...list(value()));
        break;
      case '--class': {
        const name = value().trim().toLowerCase();
        if (!/^[a-z0-9][a-z0-9_-]*$/.test(name)) {
          throw new ConfigError(`--class ${JSON.stringify(name)}: a class name is letters, digits, "-" or "_", e.g. h100`);
        }
        if (!config.classOverrides.includes(name)) config.classOverrides.push(name);
        break;
      }
      case '--gpus':
      case '--capacity':
        config.capacity = integer(flag, value(), 1);
        config.capacityGiven = true;
        break;
      case '--warm':
        config.warm = integer(flag, value(), 0);
        break;
      case '--python':
        config.python = value();
        break;
      case '--cache':
        config.cache = path.resolve(value());
        break;
      case '--name':
        config.name = value();
        break;
      case '--session-grace':
        config.sessionGraceS = integer(flag, value(), 0);
        break;
      case '--token':
        config.tokens.push(...list(value()));
        break;
      case '--single-user':
        config.singleUser = true;
        break;
      case '--no-sandbox':
        config.noSandbox = true;
        break;
      case '--worker-memory': {
        const text = value();
        config.workerMemoryBytes = parseSize(text);
        if (config.workerMemoryBytes === null) throw new ConfigError(`--worker-memory ${JSON.stringify(text)}: expected a size such as 512M or 16G`);
        break;
      }
      case '--worker-cpus': {
        const text = value();
        const cpus = Number(text);
        if (!Number.isFinite(cpus) || cpus < 0.01) throw new ConfigError(`--worker-cpus ${JSON.stringify(text)}: expected a number of CPUs ≥ 0.01, e.g. 2 or 0.5`);
        config.workerCpus = cpus;
        break;
      }
      case '--probe-sandbox':
        config.probeSandbox = true;
        break;
      case '--index-url':
        config.indexUrl = value();
        break;
      case '--find-links':
        config.findLinks.push(path.resolve(value()));
        break;
      case '--ca':
        config.ca = path.resolve(value());
        break;
      case '--fingerprint':
        fingerprint = value();
        break;
      case '--help':
      case '-h':
        throw new ConfigError(USAGE);
      default:
        throw new ConfigError(`unknown option ${JSON.stringify(flag)}\n\n${USAGE}`);
    }
  }
  if (fingerprint !== null) {
    try {
      config.fingerprint = normalizeFingerprint(fingerprint);
    } catch (e) {
      if (e instanceof TlsTrustError) throw new ConfigError(`--fingerprint / KERNELHOP_FINGERPRINT: ${e.message}`);
      throw e;
    }
  }
  if (config.probeSandbox) return config;
  if (config.noSandbox && !config.singleUser) {
    throw new ConfigError('--no-sandbox needs --single-user: unsandboxed workers let one user read the state of another');
  }
  if (config.gateways.length === 0) throw new ConfigError(`--gateway URL|HOST:PORT is required\n\n${USAGE}`);
  for (const gateway of config.gateways) {
    if (!isGatewayUrl(gateway) && !isHostPort(gateway)) {
      throw new ConfigError(
        `--gateway ${JSON.stringify(gateway)}: expected the URL the gateway prints (ws://127.0.0.1:8731/ws/v1) ` +
          'or HOST:PORT of its gRPC port (127.0.0.1:8732)',
      );
    }
  }
  if (new Set(config.gateways).size !== config.gateways.length) throw new ConfigError('--gateway names one gateway twice');
  if (config.tokens.length === 0) config.tokens = list(env.KERNELHOP_TOKEN ?? '');
  if (config.tokens.length <= 1) {
    config.tokens = config.gateways.map(() => config.tokens[0] ?? '');
  } else if (config.tokens.length !== config.gateways.length) {
    throw new ConfigError(
      `${config.tokens.length} runtime tokens for ${config.gateways.length} gateways: give one token per --gateway, ` +
        'in the same order, or one token for all of them',
    );
  }
  return config;
}

/** pip's options for the configured package source: a wheelhouse alone is the only source (an offline GPU host). */
export function pipSourceOptions(config: Pick<RuntimeConfig, 'indexUrl' | 'findLinks'>): string[] {
  const links = config.findLinks.flatMap((dir) => ['--find-links', dir]);
  if (config.indexUrl !== null) return ['--index-url', config.indexUrl, ...links];
  return links.length > 0 ? ['--no-index', ...links] : [];
}

export function isHostPort(text: string): boolean {
  return /^[^:\s/]+:\d+$/.test(text) || /^\[[0-9a-fA-F:]+\]:\d+$/.test(text);
}

export function isGatewayUrl(text: string): boolean {
  if (!/^wss?:\/\//i.test(text)) return false;
  try {
    return new URL(text).hostname !== '';
  } catch {
    return false;
  }
}

/** A comma list's items, trimmed, empty ones dropped. */
function list(text: string): string[] {
  return text.split(',').map((t) => t.trim()).filter((t) => t !== '');
}

function integer(flag: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) throw new ConfigError(`${flag} ${JSON.stringify(text)}: expected an integer ≥ ${min}`);
  return n;
}
