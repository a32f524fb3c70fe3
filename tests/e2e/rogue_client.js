// What both rogue runtimes share: a gRPC client of the gateway as a runtime, made with the schema's own loader and
// hello, so the attacker speaks the protocol as any runtime does.
const grpc = require('@grpc/grpc-js');
const { loadRuntimeProtoKeepCase, offer, toProtoNames } = require('@kernelhop/proto');

/** The gateway at `address` as the runtime `token` makes: its two services, call metadata and a promised call. */
function rogueClient(address, token) {
  const v1 = loadRuntimeProtoKeepCase();
  const creds = grpc.credentials.createInsecure();
  const runtimes = new v1.Runtimes(address, creds);
  const cas = new v1.ContentAddressableStorage(address, creds);
  const md = (runtimeId) => {
    const m = new grpc.Metadata();
    m.set('authorization', `Bearer ${token}`);
    if (runtimeId) m.set('runtime-id', runtimeId);
    return m;
  };
  const call = (client, method, req, m) =>
    new Promise((resolve, reject) => client[method](req, m, (err, res) => (err ? reject(err) : resolve(res))));
  const register = (gpuClass) =>
    call(runtimes, 'Register', { name: 'rogue', classes: [{ name: gpuClass, simulated: true }], capacity: 1, version: 'x', capabilities: toProtoNames(offer([])) }, md());
  return { runtimes, cas, md, call, register };
}

module.exports = { rogueClient };
