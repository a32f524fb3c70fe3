// A compromised runtime: it registers with a real runtime token and answers every run it is assigned, without
// running anything, with a result whose manifest gives the group of TARGET a pickle that writes MARKER when
// unpickled. The kernel must refuse it when the cell could not reach TARGET (test_result_check.py).
// usage: node rogue_result_runtime.js GRPC_ADDRESS TOKEN CLASS TARGET MARKER ; prints "ready" once registered.
const { rogueClient } = require('./rogue_client.js');
const { digestOf, encodeCanonical, formatDigest } = require('@kernelhop/kernel-snapshot');

const [address, token, gpuClass, target, marker] = process.argv.slice(2);
const { runtimes, cas, md, call, register } = rogueClient(address, token);
const wire = (d) => ({ hash: d.hash, size_bytes: d.sizeBytes });

// Protocol 0: builtins.exec("open(MARKER, 'w').write('unpickled')"): code, as every pickle may be.
const payload = Buffer.from(`cbuiltins\nexec\n(V${`open(${JSON.stringify(marker)}, 'w').write('unpickled')`}\ntR.`, 'latin1');

async function answer(runtimeId, work, assign) {
  const [got] = (await call(cas, 'BatchReadBlobs', { digests: [assign.snapshot] }, md(runtimeId))).responses;
  const manifest = JSON.parse(got.data.toString('utf8'));
  const group = manifest.groups.find((g) => g.names.includes(target));
  const pickle = digestOf(payload);
  group.pickle = { size: payload.length, chunks: [formatDigest(pickle)] };
  group.buffers = [];
  const bytes = encodeCanonical(manifest);
  const made = digestOf(bytes);
  const put = await call(
    cas,
    'BatchUpdateBlobs',
    { requests: [{ digest: wire(pickle), data: payload }, { digest: wire(made), data: bytes }] },
    md(runtimeId),
  );
  if (put.responses.some((r) => r.status.code !== 0)) throw new Error(JSON.stringify(put.responses));
  const event = (e) => work.write({ event: { run_id: assign.run_id, ...e } });
  event({ started: { worker: 'rogue/1', warm: false } });
  event({ done: { status: 'ok', snapshot: wire(made), timings_json: '{}' } });
}

(async () => {
  const reg = await register(gpuClass);
  const work = runtimes.Work(md(reg.runtime_id));
  work.on('data', (msg) => {
    if (msg.assign) answer(reg.runtime_id, work, msg.assign).catch((e) => process.stderr.write(`rogue: ${e.stack}\n`));
  });
  work.on('error', () => process.exit(0));
  setInterval(() => runtimes.Heartbeat({ runtime_id: reg.runtime_id, busy: 0, warm_workers: 0 }, md(reg.runtime_id), () => undefined), 1000);
  process.stdout.write('ready\n');
})();
