#!/usr/bin/env node
// `node runtime/dist/src/main.js --gateway URL|HOST:PORT ...`: the runtime daemon of one compute host.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CgroupError, WorkerCgroups } from './cgroups.js';
import { ChunkCache } from './chunkCache.js';
import { ConfigError, parseArgs, pipSourceOptions } from './config.js';
import { GatewayAddressError, grpcAddressOf } from './gatewayAddress.js';
import { GatewayClient } from './gatewayClient.js';
import { SlotError, queryDevices, resolveSlots } from './devices.js';
import { resolveClasses } from './gpuClasses.js';
import { PackageOverlays } from './packages.js';
import { loadKernelhopProto } from './proto.js';
import { Runtime } from './runtime.js';
import { Sandbox } from './sandbox.js';
import { SlotArbiter } from './slotArbiter.js';
import { TlsTrust, TlsTrustError, grpcCredentials, readCa, resolvePin } from './tls.js';
import { WorkerPool } from './workerPool.js';

const REGISTER_TIMEOUT_MS = 10_000;

function log(line: string): void {
  process.stderr.write(`kernelhop runtime: ${line}\n`);
}

function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(): Promise<void> {
  let config;
  try {
    config = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }

  // Workers' spaces sit in the cache's directory, on its file system: handed-over blobs are hard links into them.
  const spaces = path.join(config.cache, 'workers');
  const sandbox = config.noSandbox ? Sandbox.none(spaces, 'started with --no-sandbox') : Sandbox.detect(config.python, spaces);
  if (config.probeSandbox) {
    process.stdout.write(`${JSON.stringify({ sandbox: sandbox.kind, detail: sandbox.detail })}\n`);
    process.exit(sandbox.kind === 'none' ? 1 : 0);
  }
  if (sandbox.kind === 'none' && !config.singleUser) {
    log(
      `cannot sandbox workers on this host: ${sandbox.detail}. Without a sandbox one user's cells could read ` +
        `another's state and credentials, so this runtime serves nobody. Install bubblewrap (and run as root or ` +
        `allow unprivileged user namespaces), or start it with --single-user if only one user will use it.`,
    );
    process.exit(1);
  }
  if (config.workerMemoryBytes !== null || config.workerCpus !== null) {
    try {
      sandbox.limit(WorkerCgroups.open({ memoryBytes: config.workerMemoryBytes, cpus: config.workerCpus }));
    } catch (err) {
      if (!(err instanceof CgroupError)) throw err;
      log(`cannot limit workers: ${err.message}`);
      process.exit(1);
    }
  }
  log(sandbox.kind === 'none' ? `workers run unsandboxed (--single-user): ${sandbox.detail}` : `workers sandboxed: ${sandbox.detail}`);

  // Each gateway's gRPC address and how it is verified; the CA or pin given is the same for all of them.
  const links: { address: string; trust: TlsTrust | undefined; token: string }[] = [];
  for (const [i, named] of config.gateways.entries()) {
    let trust: TlsTrust | undefined;
    try {
      // TLS when the gateway's URL says so or something to verify it by is given; plain text only on loopback's word.
      if (named.startsWith('wss://') || config.ca !== null || config.fingerprint !== null) {
        trust = { ...(config.ca !== null && { ca: readCa(config.ca) }) };
        if (config.fingerprint !== null) {
          const url = named.startsWith('wss://') ? new URL(named) : new URL(`https://${named}`);
          trust = await resolvePin(url.hostname.replace(/^\[|\]$/g, ''), Number(url.port || 443), config.fingerprint);
        }
      }
      const address = await grpcAddressOf(named, trust);
      if (address !== named) log(`${named} takes runtimes on its gRPC port ${address}`);
      links.push({ address, trust, token: config.tokens[i] ?? '' });
    } catch (err) {
      if (!(err instanceof GatewayAddressError) && !(err instanceof TlsTrustError)) throw err;
      log(err.message);
      process.exit(1);
    }
  }

  const gpus = await queryDevices();
  const classes = resolveClasses(config.classOverrides, gpus.map((g) => g.name));
  let slots;
  try {
    slots = resolveSlots(classes, gpus, config.capacityGiven ? config.capacity : null);
  } catch (err) {
    if (!(err instanceof SlotError)) throw err;
    log(err.message);
    process.exit(2);
  }
  const cache = new ChunkCache(config.cache);
  const overlays = new PackageOverlays({
    python: config.python,
    root: path.join(config.cache, 'packages'),
    pipOptions: pipSourceOptions(config),
    log,
  });
  sandbox.sharePackages(overlays.root);
  const pool = new WorkerPool({
    worker: { python: config.python, sandbox },
    slots,
    warm: config.warm,
    sessionGraceMs: config.sessionGraceS * 1000,
    log,
  });
  const { name } = config;
  const capacity = slots.length;
  // One link per gateway over the same workers, cache and slots; the arbiter keeps two gateways off one slot.
  const arbiter = new SlotArbiter();
  const pkg = loadKernelhopProto();
  const runtimes = links.map(({ address, trust, token }) => {
    const gateway = new GatewayClient(address, token, pkg, log, grpcCredentials(trust));
    log(trust === undefined ? `plain text to ${address} (no TLS)` : `TLS to ${address}`);
    return new Runtime({ gateway, cache, overlays, sandbox, pool, name, classes, slots, version: version(), log, arbiter });
  });

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping workers and leaving the gateway${runtimes.length > 1 ? 's' : ''}`);
    for (const runtime of runtimes) runtime.stop();
    pool.shutdown();
    // Workers got SIGKILL; give the event loop a moment to flush the last writes.
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => shutdown('SIGHUP'));

  // Workers import their modules while we register.
  pool.start();
  const connected = await Promise.allSettled(runtimes.map((runtime) => runtime.connect(REGISTER_TIMEOUT_MS)));
  const refused = connected.find(
    (r): r is PromiseRejectedResult =>
      r.status === 'rejected' && [grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED].includes((r.reason as grpc.ServiceError).code),
  );
  const failures = connected.flatMap((r, i) => (r.status === 'rejected' ? [{ err: r.reason as unknown, runtime: runtimes[i] as Runtime }] : []));
  // Several gateways: serving those that answer is better than serving none; the others are tried until they do.
  if (refused === undefined && failures.length < runtimes.length) {
    for (const { err, runtime } of failures) {
      const e = err as grpc.ServiceError;
      log(`could not register with ${runtime.address} (${e.details || e.message}); retrying in the background`);
      runtime.keepTrying();
    }
  } else {
    for (const runtime of runtimes) runtime.stop();
    pool.shutdown();
    const err = refused?.reason ?? (failures[0] as { err: unknown }).err;
    const address = (failures.find((f) => f.err === err) as { runtime: Runtime }).runtime.address;
    const e = err as grpc.ServiceError;
    const detail = e.details || e.message;
    if (e.code === grpc.status.UNAUTHENTICATED || e.code === grpc.status.PERMISSION_DENIED) {
      log(
        `the gateway at ${address} refused our token (${detail}). Give the runtime a runtime token ` +
          '(KERNELHOP_TOKEN or --token) made by `kernelhop runtime-token create`.',
      );
    } else {
      log(
        `cannot reach a gateway at ${address} (${detail}). Start one with \`kernelhop gateway\` ` +
          `(it listens for runtimes on port 8732), or pass --gateway with the URL a running gateway prints.` +
          (links.every((l) => l.trust === undefined)
            ? ' If the gateway runs with TLS, pass its wss:// URL, or --ca FILE (KERNELHOP_CA) or --fingerprint SHA256 ' +
              '(KERNELHOP_FINGERPRINT) as its first lines print them.'
            : ''),
      );
    }
    process.exit(1);
  }
  const simulated = classes.filter((c) => c.simulated).map((c) => c.name);
  if (simulated.length > 0) log(`simulated classes (this host lacks the device): ${simulated.join(', ')}`);
  for (const s of slots) log(`slot ${s.index}: ${s.name || 'posed'}${s.device === '' ? ' (no GPU)' : ` CUDA_VISIBLE_DEVICES=${s.device}`}`);
  process.stdout.write(
    `kernelhop runtime ready id=${runtimes.map((r) => r.runtimeId || '-').join(',')} classes=${classes.map((c) => c.name).join(',')} ` +
      `capacity=${capacity} gateway=${links.map((l) => l.address).join(',')}\n`,
  );
}

main().catch((err: Error) => {
  log(`fatal: ${err.stack ?? err.message}`);
  process.exit(1);
});
