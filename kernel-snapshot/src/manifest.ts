// Snapshot manifest, version 1 (docs/FORMAT.md). Unknown keys are kept, not refused, so a
// newer writer's additions still verify here; they are covered by the manifest's digest all the same.
import { canonicalJson, encodeCanonical } from './canonicalJson.js';
import { Digest, DigestError, digestOf, parseDigest } from './digest.js';

export const MANIFEST_KIND = 'kernelhop.snapshot';
export const MANIFEST_VERSION = 1;

/** A byte stream cut into chunks; `chunks` are digest strings whose sizes add up to `size`. */
export interface ChunkedBytes {
  size: number;
  chunks: string[];
}

export interface ManifestGroup {
  names: string[];
  types: Record<string, string>;
  pickle: ChunkedBytes;
  buffers: ChunkedBytes[];
  [extra: string]: unknown;
}

export interface Unpicklable {
  type: string;
  reason: string;
  [extra: string]: unknown;
}

/** The working directory a hop carries: the root blob of its tree (tree.ts), and sys.path entries inside it. */
export interface ManifestFiles {
  tree: string;
  sys_path: string[];
}

export interface Manifest {
  kind: typeof MANIFEST_KIND;
  version: typeof MANIFEST_VERSION;
  groups: ManifestGroup[];
  unpicklable?: Record<string, Unpicklable>;
  meta?: Record<string, unknown>;
  files?: ManifestFiles;
  [extra: string]: unknown;
}

export class ManifestError extends Error {
  override name = 'ManifestError';
}

/** Validate a parsed JSON value as a version-1 manifest; returns the same object, typed. */
export function parseManifest(value: unknown): Manifest {
  const m = expectObject(value, 'manifest');
  if (m.kind !== MANIFEST_KIND) {
    throw new ManifestError(`manifest.kind is ${show(m.kind)}; expected "${MANIFEST_KIND}"`);
  }
  if (m.version !== MANIFEST_VERSION) {
    throw new ManifestError(
      `manifest.version is ${show(m.version)}; this build reads version ${MANIFEST_VERSION} only`,
    );
  }
  if (!Array.isArray(m.groups)) throw new ManifestError(`manifest.groups must be an array, got ${show(m.groups)}`);
  const seen = new Set<string>();
  m.groups.forEach((g, i) => checkGroup(g, `manifest.groups[${i}]`, seen));
  if (m.unpicklable !== undefined) {
    const u = expectObject(m.unpicklable, 'manifest.unpicklable');
    for (const [name, entry] of Object.entries(u)) {
      const path = `manifest.unpicklable[${JSON.stringify(name)}]`;
      if (seen.has(name)) throw new ManifestError(`${path}: name is also captured in a group`);
      const e = expectObject(entry, path);
      expectString(e.type, `${path}.type`);
      expectString(e.reason, `${path}.reason`);
    }
  }
  if (m.meta !== undefined) expectObject(m.meta, 'manifest.meta');
  if (m.files !== undefined) checkFiles(m.files);
  // Refuse what has no canonical form (floats, lone surrogates) now rather than when it is re-encoded.
  try {
    canonicalJson(m);
  } catch (e) {
    throw new ManifestError(`manifest has no canonical JSON form: ${(e as Error).message}`);
  }
  return m as unknown as Manifest;
}

/** Parse a manifest blob (UTF-8 JSON). */
export function parseManifestBytes(bytes: Uint8Array): Manifest {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ManifestError('manifest blob is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ManifestError(`manifest blob is not JSON: ${(e as Error).message}`);
  }
  return parseManifest(value);
}

/** Every chunk digest the manifest names (pickles and buffers), each once, in order of first appearance. */
export function manifestBlobDigests(manifest: Manifest): Digest[] {
  return groupBlobDigests(manifest.groups);
}

/** The chunks of the groups holding at least one of `names` (what a lazy restore of those names reads). */
export function reachedBlobDigests(manifest: Manifest, names: ReadonlySet<string>): Digest[] {
  return groupBlobDigests(manifest.groups.filter((g) => g.names.some((n) => names.has(n))));
}

function groupBlobDigests(groups: ManifestGroup[]): Digest[] {
  const out: Digest[] = [];
  const seen = new Set<string>();
  const add = (c: string): void => {
    if (!seen.has(c)) {
      seen.add(c);
      out.push(parseDigest(c));
    }
  };
  for (const g of groups) {
    g.pickle.chunks.forEach(add);
    for (const b of g.buffers) b.chunks.forEach(add);
  }
  return out;
}

/** The root of the file tree the manifest names, if any; its blobs are found with tree.ts's treeBlobDigests. */
export function manifestFilesTree(manifest: Manifest): Digest | undefined {
  return manifest.files === undefined ? undefined : parseDigest(manifest.files.tree);
}

export function encodeManifest(manifest: Manifest): Buffer {
  return encodeCanonical(manifest);
}

/** The digest that names a snapshot: BLAKE3 of the canonical encoding. */
export function manifestDigest(manifest: Manifest): Digest {
  return digestOf(encodeManifest(manifest));
}

function checkGroup(value: unknown, path: string, seen: Set<string>): void {
  const g = expectObject(value, path);
  if (!Array.isArray(g.names) || g.names.length === 0) {
    throw new ManifestError(`${path}.names must be a non-empty array of names`);
  }
  g.names.forEach((n, k) => {
    expectString(n, `${path}.names[${k}]`);
    if (seen.has(n as string)) throw new ManifestError(`${path}.names: ${show(n)} appears in more than one group`);
    seen.add(n as string);
  });
  const types = expectObject(g.types, `${path}.types`);
  for (const [name, t] of Object.entries(types)) expectString(t, `${path}.types[${JSON.stringify(name)}]`);
  checkChunked(g.pickle, `${path}.pickle`);
  if (!Array.isArray(g.buffers)) throw new ManifestError(`${path}.buffers must be an array, got ${show(g.buffers)}`);
  g.buffers.forEach((b, k) => checkChunked(b, `${path}.buffers[${k}]`));
}

function checkFiles(value: unknown): void {
  const f = expectObject(value, 'manifest.files');
  try {
    parseDigest(f.tree);
  } catch (e) {
    if (e instanceof DigestError) throw new ManifestError(`manifest.files.tree: ${e.message}`);
    throw e;
  }
  const relative = (p: unknown): boolean =>
    typeof p === 'string' && p !== '' && !p.startsWith('/') && !p.split('/').includes('..');
  if (!Array.isArray(f.sys_path) || !f.sys_path.every(relative)) {
    throw new ManifestError('manifest.files.sys_path must list relative paths inside the tree');
  }
}

function checkChunked(value: unknown, path: string): void {
  const c = expectObject(value, path);
  if (typeof c.size !== 'number' || !Number.isSafeInteger(c.size) || c.size < 0) {
    throw new ManifestError(`${path}.size must be a non-negative integer, got ${show(c.size)}`);
  }
  if (!Array.isArray(c.chunks)) throw new ManifestError(`${path}.chunks must be an array, got ${show(c.chunks)}`);
  let total = 0;
  c.chunks.forEach((d, k) => {
    try {
      total += parseDigest(d).sizeBytes;
    } catch (e) {
      if (e instanceof DigestError) throw new ManifestError(`${path}.chunks[${k}]: ${e.message}`);
      throw e;
    }
  });
  if (total !== c.size) {
    throw new ManifestError(`${path}: chunk sizes add up to ${total} but size is ${c.size}`);
  }
}

function expectObject(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ManifestError(`${path} must be a JSON object, got ${show(value)}`);
  }
  return value as Record<string, unknown>;
}

function expectString(value: unknown, path: string): void {
  if (typeof value !== 'string') throw new ManifestError(`${path} must be a string, got ${show(value)}`);
}

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'an array';
  if (v !== null && typeof v === 'object') return 'an object';
  const s = JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}
