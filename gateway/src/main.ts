#!/usr/bin/env node
// Entry point: `node gateway/dist/src/main.js [--host H] [--port P] [--grpc-port G] [--data DIR]`.
import { ConfigError, USAGE, loadConfig, wantsHelp } from './config.js';
import { startGateway } from './server.js';
import { TlsError } from './tls.js';

async function main(): Promise<void> {
  // Each stored blob is written and fsynced on libuv's thread pool; its default 4 threads serialise a batch's fsyncs.
  // Set before the first asynchronous file operation, which is when the pool starts.
  process.env.UV_THREADPOOL_SIZE ??= '16';
  if (wantsHelp(process.argv.slice(2))) {
    console.log(USAGE);
    return;
  }
  const config = loadConfig(process.argv.slice(2), process.env);
  const gateway = await startGateway(config);
  // Test harnesses and `kernelhop` wait for exactly this line.
  if (gateway.tlsFingerprint !== undefined) {
    const ca = config.tls?.mode === 'auto' ? `; CA ${config.dataDir}/tls/ca.pem (KERNELHOP_CA)` : '';
    console.log(`kernelhop gateway TLS certificate sha256 ${gateway.tlsFingerprint} (KERNELHOP_FINGERPRINT)${ca}`);
  }
  console.log(`kernelhop gateway ready ws=${gateway.wsUrl} grpc=${gateway.grpcAddress}`);
  if (config.tokenGenerated) {
    console.log(`kernelhop gateway token ${config.token} (set KERNELHOP_TOKEN to choose one; also in ${config.dataDir}/admin-token)`);
  }
  const stop = (signal: string): void => {
    console.error(`kernelhop gateway: ${signal}, shutting down`);
    gateway.close().then(
      () => process.exit(0),
      (e: unknown) => {
        console.error(`kernelhop gateway: shutdown failed: ${String(e)}`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

main().catch((e: unknown) => {
  if (e instanceof ConfigError || e instanceof TlsError) {
    console.error(`kernelhop gateway: ${e.message}`);
    process.exit(2);
  }
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'EADDRINUSE') {
    console.error(`kernelhop gateway: ${err.message}; is another gateway running? Pick another --port/--grpc-port.`);
  } else {
    console.error(`kernelhop gateway: failed to start: ${err.stack ?? String(e)}`);
  }
  process.exit(1);
});
