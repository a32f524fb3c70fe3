// Half of benchmarks/blob_fetch.py: a runtime's gRPC client fetching blobs from a gateway, with and without its
// cache writes. Prints one JSON line of seconds.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const root = path.join(__dirname, '..');
const { GatewayClient } = require(path.join(root, 'runtime/dist/src/gatewayClient.js'));
const { loadKernelhopProto } = require(path.join(root, 'runtime/dist/src/proto.js'));
const { ChunkCache } = require(path.join(root, 'runtime/dist/src/chunkCache.js'));
const { parseDigest } = require(path.join(root, 'kernel-snapshot/dist/src/index.js'));

const [address, token, listFile] = process.argv.slice(2);
const digests = fs.readFileSync(listFile, 'utf8').trim().split('\n').map(parseDigest);
const gateway = new GatewayClient(address, token, loadKernelhopProto());

/** BatchReadBlobs alone, in the runtime's batch size and depth: the transport without verifying or caching. */
async function readOnly() {
  const cache = new ChunkCache(fs.mkdtempSync(path.join(os.tmpdir(), 'kh-fetch-')));
  const started = process.hrtime.bigint();
  // fetchMissing with a write that does nothing (write verifies and stores): the same batching and pipelining.
  cache.write = async () => undefined;
  await cache.fetchMissing(gateway, digests);
  fs.rmSync(cache.root, { recursive: true });
  return Number(process.hrtime.bigint() - started) / 1e9;
}

async function intoCache() {
  const cache = new ChunkCache(fs.mkdtempSync(path.join(os.tmpdir(), 'kh-fetch-')));
  const started = process.hrtime.bigint();
  await cache.fetchMissing(gateway, digests);
  const s = Number(process.hrtime.bigint() - started) / 1e9;
  fs.rmSync(cache.root, { recursive: true });
  return s;
}

(async () => {
  const out = { transport_s: [], fetch_s: [] };
  for (let i = 0; i < 3; i++) {
    out.transport_s.push(await readOnly());
    out.fetch_s.push(await intoCache());
  }
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
