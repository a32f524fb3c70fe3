// What an attacker's cell runs on a runtime host: gRPC calls to the gateway as a runtime of its own.
// usage: node rogue_runtime.js GRPC_ADDRESS TOKEN DIGEST... ; prints one JSON line: {register, read}
const { rogueClient } = require('./rogue_client.js');

const [address, token, ...digests] = process.argv.slice(2);
const { cas, md, call, register } = rogueClient(address, token);
// A refusal is the answer the test looks for: it is printed, not thrown.
const settle = (p) => p.then((ok) => ({ ok }), (err) => ({ code: err.code, details: err.details }));

(async () => {
  const reg = await settle(register('h100'));
  const id = reg.ok ? reg.ok.runtime_id : '';
  const wanted = digests.map((d) => ({ hash: d.split('/')[0], size_bytes: Number(d.split('/')[1]) }));
  const read = await settle(call(cas, 'BatchReadBlobs', { digests: wanted }, md(id)));
  const out = {
    register: reg.ok ? 'ok' : reg,
    read: read.ok ? read.ok.responses.map((r) => ({ code: r.status.code, message: r.status.message, data: r.data.toString('latin1') })) : read,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
})();
