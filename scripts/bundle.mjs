// `npm run bundle`: the gateway and the runtime as self-contained JavaScript under kernelhop/bundle/, which the wheel
// carries, so `pip install kernelhop` needs neither npm nor a compiler. The hatch build hook (hatch_build.py) runs it.
//
// Each bundle sits where tsc's output sits in a checkout (PACKAGE/dist/src/main.js, the proto at proto/, the
// runtime's package.json two folders up), because the sources find those files from __dirname. What cannot be
// bundled travels as a package in kernelhop/bundle/node_modules, where Node's require finds it:
//  - piscina starts its threads from its own dist/worker.js, which must share one piscina with the decode worker
//    (Piscina.move marks results with a symbol private to one copy of the module);
//  - @napi-rs/blake-hash is a prebuilt N-API addon (one build per platform; without it BLAKE3 runs in wasm).
// Left out, as addons their users do without: better-sqlite3 (the bundled gateway runs on a Node with node:sqlite,
// gateway/src/sqlite.ts), ws's bufferutil and utf-8-validate, pg's pg-native (pg speaks the protocol in JavaScript)
// and the AWS SDK's CRT signer (only for SigV4a; S3 signs with SigV4). Each is required inside a try by its user.
import { build } from 'esbuild';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'kernelhop', 'bundle');
const optionalAddons = ['better-sqlite3', 'bufferutil', 'utf-8-validate', 'pg-native', '@aws-sdk/signature-v4-crt'];
const external = [...optionalAddons, 'piscina', '@napi-rs/blake-hash'];
const version = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version;

fs.rmSync(out, { recursive: true, force: true });

async function bundle(entry, outfile) {
  await build({
    entryPoints: [path.join(root, entry)],
    outfile: path.join(out, outfile),
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    external,
    legalComments: 'eof',
    logLevel: 'warning',
  });
}

function copy(from, to) {
  fs.cpSync(path.join(root, from), path.join(out, to), {
    recursive: true,
    filter: (file) => !file.endsWith('.map') && !file.endsWith('.d.ts') && !file.endsWith('.md'),
  });
}

await bundle('gateway/src/main.ts', 'gateway/dist/src/main.js');
await bundle('gateway/src/decodeWorker.ts', 'gateway/dist/src/decodeWorker.js');
await bundle('runtime/src/main.ts', 'runtime/dist/src/main.js');

// blake3-wasm reads its .wasm from beside the module that loads it: beside each bundle.
for (const pkg of ['gateway', 'runtime']) copy('node_modules/blake3-wasm/dist/wasm/nodejs/blake3_js_bg.wasm', `${pkg}/dist/src/blake3_js_bg.wasm`);
copy('proto/kernelhop', 'proto/kernelhop');
fs.writeFileSync(path.join(out, 'runtime', 'package.json'), JSON.stringify({ name: '@kernelhop/runtime', version }) + '\n');
fs.writeFileSync(path.join(out, 'gateway', 'package.json'), JSON.stringify({ name: '@kernelhop/gateway', version }) + '\n');

copy('node_modules/piscina/package.json', 'node_modules/piscina/package.json');
copy('node_modules/piscina/LICENSE', 'node_modules/piscina/LICENSE');
copy('node_modules/piscina/dist', 'node_modules/piscina/dist');
copy('node_modules/@napi-rs/blake-hash/package.json', 'node_modules/@napi-rs/blake-hash/package.json');
copy('node_modules/@napi-rs/blake-hash/index.js', 'node_modules/@napi-rs/blake-hash/index.js');
copy('node_modules/@napi-rs/blake-hash/LICENSE', 'node_modules/@napi-rs/blake-hash/LICENSE');
// The addon's build for this machine's platform, the one npm installed (the wheel built on linux-x64 carries that).
for (const name of fs.readdirSync(path.join(root, 'node_modules', '@napi-rs'))) {
  if (name.startsWith('blake-hash-')) copy(`node_modules/@napi-rs/${name}`, `node_modules/@napi-rs/${name}`);
}
console.log(`bundled the gateway and the runtime into ${path.relative(root, out)}/`);
