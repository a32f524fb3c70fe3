// A runtime's cold fetch from a gateway process on an S3-compatible store (moto's server on loopback): through the
// gateway (BatchReadBlobs, the gateway reading each blob from the store) against straight from the store by presigned
// URLs, both into a fresh runtime cache (verified and written), alternating, in the same run; with the wall time and
// the gateway process's CPU time (from /proc) of each.
// Usage: node benchmarks/s3_fetch.js [--mib N] [--runs R]   (after npm run build; moto_server from the test extra)
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { randomBytes } = require('node:crypto');
const { parseArgs } = require('node:util');
const root = path.join(__dirname, '..');
const { spawn } = require('node:child_process');
const { startS3Server } = require(path.join(root, 'gateway/dist/test/s3Server.js'));
const { FakeRuntime, TestClient, snapshotOf } = require(path.join(root, 'gateway/dist/test/helpers.js'));
const { GatewayClient } = require(path.join(root, 'runtime/dist/src/gatewayClient.js'));
const { loadKernelhopProto } = require(path.join(root, 'runtime/dist/src/proto.js'));
const { ChunkCache } = require(path.join(root, 'runtime/dist/src/chunkCache.js'));
const { digestOf, formatDigest, parseDigest } = require(path.join(root, 'kernel-snapshot/dist/src/index.js'));

const { values } = parseArgs({ options: { mib: { type: 'string', default: '64' }, runs: { type: 'string', default: '3' } } });
const CHUNK = 256 * 1024;

async function main() {
  const s3 = await startS3Server();
  await s3.createBucket('bench');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kh-s3-bench-'));
  const token = randomBytes(16).toString('hex');
  // moto itself, not the test's counting proxy: both paths read from the same server.
  const tokenFile = path.join(dataDir, 'runtime-token');
  const proc = spawn(
    process.execPath,
    [path.join(root, 'gateway/dist/src/main.js'), '--port', '0', '--grpc-port', '0', '--data', dataDir,
      '--runtime-token-file', tokenFile, '--store', 's3://bench/bench', '--s3-endpoint', s3.motoEndpoint],
    { env: { ...process.env, KERNELHOP_TOKEN: token }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const gw = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (b) => {
      out += b.toString();
      const m = /kernelhop gateway ready ws=(\S+) grpc=(\S+)/.exec(out);
      if (m) resolve({ wsUrl: m[1], grpcAddress: m[2] });
    });
    proc.once('exit', (code) => reject(new Error(`gateway exited with ${code}`)));
  });
  const cpuSeconds = () => {
    const fields = fs.readFileSync(`/proc/${proc.pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks of 1/100 s
  };
  const admin = await TestClient.connect(gw.wsUrl, token);
  const chunks = [];
  for (let i = 0; i < (Number(values.mib) * 1024 * 1024) / CHUNK; i++) {
    const data = randomBytes(CHUNK);
    chunks.push({ digest: formatDigest(digestOf(data)), data });
  }
  for (let i = 0; i < chunks.length; i += 32) {
    const put = await admin.putBlobs(chunks.slice(i, i + 32));
    if (put.ok !== true) throw new Error(JSON.stringify(put));
  }
  const snap = snapshotOf(chunks);
  await admin.putBlobs([snap]);
  const runtimeToken = fs.readFileSync(tokenFile, 'utf8').trim();
  const rt = new FakeRuntime(gw.grpcAddress, { name: 'bench', classes: ['h100'], capacity: 1, token: runtimeToken });
  await rt.start();
  admin.send({ id: 'run', op: 'run', session: 's', gpu_class: 'h100', code: 'x', snapshot: snap.digest, timeout_s: 0 });
  await rt.nextMessage('assign', 30_000);

  // The runtime's own client and cache, acting for the fake runtime that holds the run (its id, its token).
  const client = new GatewayClient(gw.grpcAddress, runtimeToken, loadKernelhopProto());
  client.runtimeId = rt.id;
  const digests = [parseDigest(snap.digest), ...chunks.map((c) => parseDigest(c.digest))];
  const fetchOnce = async (presigned) => {
    client.presignedReads = presigned;
    const cache = new ChunkCache(fs.mkdtempSync(path.join(os.tmpdir(), 'kh-s3-fetch-')));
    const cpu = cpuSeconds();
    const started = process.hrtime.bigint();
    await cache.fetchMissing(client, digests);
    const s = Number(process.hrtime.bigint() - started) / 1e9;
    const gatewayCpu = cpuSeconds() - cpu;
    fs.rmSync(cache.root, { recursive: true });
    return [+s.toFixed(3), +gatewayCpu.toFixed(2)];
  };
  const out = { mib: Number(values.mib), chunk_kib: CHUNK / 1024, through_gateway: [], presigned: [] };
  for (let i = 0; i < Number(values.runs); i++) {
    out.through_gateway.push(await fetchOnce(false));
    out.presigned.push(await fetchOnce(true));
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const wall = (k) => median(out[k].map((r) => r[0]));
  const cpu = (k) => median(out[k].map((r) => r[1]));
  out.note = '[wall s, gateway CPU s] per run; medians below';
  out.wall_ratio = +(wall('through_gateway') / wall('presigned')).toFixed(2);
  out.gateway_cpu_s = { through_gateway: cpu('through_gateway'), presigned: cpu('presigned') };
  console.log(JSON.stringify(out));
  client.close();
  rt.close();
  admin.close();
  proc.kill('SIGTERM');
  await new Promise((r) => proc.once('exit', r));
  await s3.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
