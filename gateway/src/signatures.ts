// The signed snapshot record: its shape, its canonical bytes, its id and its Ed25519 signature.
// The kernel signs; the gateway checks on save and never trusts the id or author a client claims.
import { createPublicKey, verify } from 'node:crypto';
import { digestOf, encodeCanonical, parseDigest } from '@kernelhop/kernel-snapshot';

export const RECORD_KIND = 'kernelhop.snapshot-record';
export const RECORD_VERSION = 1;

/** What a snapshot records besides its state (the manifest): as git's commit is to its tree. */
export interface SnapshotRecord {
  kind: typeof RECORD_KIND;
  version: typeof RECORD_VERSION;
  /** Digest of the manifest blob ("<64 hex>/<size>"). */
  manifest: string;
  author: string;
  /** Base64 of the author's raw 32-byte Ed25519 public key. */
  key: string;
  /** Ids of the snapshots this one follows (empty for a first save). */
  parents: string[];
  created: string;
  message: string;
  notebook: string | null;
  /** The code of the cells run since the parent, in order. */
  cells: string[];
  environment: { python: string; packages: Record<string, string> };
}

export class RecordError extends Error {}

const ID = /^[0-9a-f]{64}$/;

export function parseRecord(v: unknown): SnapshotRecord {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new RecordError('record must be a JSON object');
  const r = v as Record<string, unknown>;
  const keys = ['kind', 'version', 'manifest', 'author', 'key', 'parents', 'created', 'message', 'notebook', 'cells', 'environment'];
  const extra = Object.keys(r).filter((k) => !keys.includes(k));
  if (extra.length > 0) throw new RecordError(`record has unknown fields: ${extra.join(', ')}`);
  if (r.kind !== RECORD_KIND) throw new RecordError(`record.kind must be ${JSON.stringify(RECORD_KIND)}`);
  if (r.version !== RECORD_VERSION) throw new RecordError(`record.version must be ${RECORD_VERSION}`);
  try {
    parseDigest(r.manifest);
  } catch (e) {
    throw new RecordError(`record.manifest: ${(e as Error).message}`);
  }
  for (const k of ['author', 'key', 'created', 'message'] as const) {
    if (typeof r[k] !== 'string') throw new RecordError(`record.${k} must be a string`);
  }
  if (rawKey(r.key as string) === undefined) throw new RecordError('record.key must be base64 of a 32-byte Ed25519 public key');
  if (!Array.isArray(r.parents) || !r.parents.every((p) => typeof p === 'string' && ID.test(p))) {
    throw new RecordError('record.parents must be a list of snapshot ids (64 hex)');
  }
  if (r.notebook !== null && typeof r.notebook !== 'string') throw new RecordError('record.notebook must be a string or null');
  if (!Array.isArray(r.cells) || !r.cells.every((c) => typeof c === 'string')) {
    throw new RecordError('record.cells must be a list of strings');
  }
  const env = r.environment as Record<string, unknown> | null;
  if (
    typeof env !== 'object' ||
    env === null ||
    typeof env.python !== 'string' ||
    typeof env.packages !== 'object' ||
    env.packages === null ||
    !Object.values(env.packages).every((x) => typeof x === 'string')
  ) {
    throw new RecordError('record.environment must be {python: str, packages: {name: version}}');
  }
  return r as unknown as SnapshotRecord;
}

/** The bytes that are signed and hashed: canonical JSON, the encoding the manifest uses. */
export function recordBytes(record: SnapshotRecord): Buffer {
  return encodeCanonical(record);
}

/** A snapshot's id: BLAKE3-256 of its record's canonical bytes, hex. */
export function recordId(record: SnapshotRecord): string {
  return digestOf(recordBytes(record)).hash;
}

export function verifyRecord(record: SnapshotRecord, signatureB64: string): boolean {
  const key = rawKey(record.key);
  const sig = Buffer.from(signatureB64, 'base64');
  if (key === undefined || sig.length !== 64) return false;
  const pub = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: key.toString('base64url') }, format: 'jwk' });
  return verify(null, recordBytes(record), pub, sig);
}

function rawKey(b64: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/]{43}=$/.test(b64)) return undefined;
  const key = Buffer.from(b64, 'base64');
  return key.length === 32 ? key : undefined;
}

export function isSnapshotId(s: string): boolean {
  return ID.test(s);
}
