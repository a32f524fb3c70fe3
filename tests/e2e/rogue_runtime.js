// What an attacker's cell runs on a runtime host: gRPC calls to the gateway as a runtime of its own.
// usage: node rogue_runtime.js GRPC_ADDRESS TOKEN DIGEST... ; prints one JSON line: {register, read}
const grpc = require('@grpc/grpc-js');
// The schema's own loader and hello: the attacker speaks the protocol as any runtime does.
const { loadRuntimeProtoKeepCase, offer, toProtoNames } = require('@kernelhop/proto');

const [address, token, ...digests] = process.argv.slice(2);
const v1 = loadRuntimeProtoKeepCase();
const creds = grpc.credentials.createInsecure();
const runtimes = new v1.Runtimes(address, creds);
const cas = new v1.ContentAddressableStorage(address, creds);

function md(runtimeId) {
  const m = new grpc.Metadata();
  m.set('authorization', `Bearer ${token}`);
  if (runtimeId) m.set('runtime-id', runtimeId);
  return m;
}
const call = (client, method, req, m) =>
  new Promise((resolve) => client[method](req, m, (err, res) => resolve(err ? { code: err.code, details: err.details } : { ok: res })));

(async () => {
  const reg = await call(runtimes, 'Register', { name: 'rogue', classes: [{ name: 'h100', simulated: true }], capacity: 1, version: 'x', capabilities: toProtoNames(offer([])) }, md());
  const id = reg.ok ? reg.ok.runtime_id : '';
  const wanted = digests.map((d) => ({ hash: d.split('/')[0], size_bytes: Number(d.split('/')[1]) }));
  const read = await call(cas, 'BatchReadBlobs', { digests: wanted }, md(id));
  const out = {
    register: reg.ok ? 'ok' : reg,
    read: read.ok ? read.ok.responses.map((r) => ({ code: r.status.code, message: r.status.message, data: r.data.toString('latin1') })) : read,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
})();
