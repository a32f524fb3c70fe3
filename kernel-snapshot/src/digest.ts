// BLAKE3-256 digests of uncompressed bytes plus their length, written "<64 hex>/<size>" (ARCHITECTURE.md).
import { hash as wasmBlake3Hash } from 'blake3-wasm';

/** Which BLAKE3 computes digests in this process: a prebuilt native addon, or blake3-wasm where there is none. */
export type Blake3Backend = 'native' | 'wasm';

type Blake3 = (bytes: Uint8Array) => Buffer;

export interface Digest {
  /** 64 lowercase hex characters. */
  readonly hash: string;
  readonly sizeBytes: number;
}

const HASH_RE = /^[0-9a-f]{64}$/;
const SIZE_RE = /^(0|[1-9][0-9]*)$/;

export class DigestError extends Error {
  override name = 'DigestError';
}

/** Parse `"<64 lowercase hex>/<size>"`; throws DigestError naming what is wrong. */
export function parseDigest(text: unknown): Digest {
  if (typeof text !== 'string') {
    throw new DigestError(`a digest must be a string "<64 hex>/<size>", got ${describe(text)}`);
  }
  const slash = text.indexOf('/');
  if (slash < 0) {
    throw new DigestError(`digest ${JSON.stringify(text)} has no "/<size>" part; expected "<64 hex>/<size>"`);
  }
  const hashPart = text.slice(0, slash);
  const sizePart = text.slice(slash + 1);
  return makeDigest(hashPart, parseSize(sizePart, text));
}

/** Build a Digest from parts (e.g. a protobuf Digest), validating both. */
export function makeDigest(hash: unknown, sizeBytes: unknown): Digest {
  if (typeof hash !== 'string' || !HASH_RE.test(hash)) {
    throw new DigestError(`digest hash ${describe(hash)} is not 64 lowercase hex characters (BLAKE3-256)`);
  }
  if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes < 0) {
    throw new DigestError(`digest size ${describe(sizeBytes)} is not a non-negative integer`);
  }
  return { hash, sizeBytes };
}

export function formatDigest(d: Digest): string {
  return `${d.hash}/${d.sizeBytes}`;
}

export function digestOf(bytes: Uint8Array, backend: Blake3Backend = blake3Backend()): Digest {
  const out = backend === 'native' ? Private.nativeBlake3(bytes) : Private.wasmBlake3(bytes);
  return { hash: out.toString('hex'), sizeBytes: bytes.byteLength };
}

/**
 * The gateway and runtime verify every byte they move, so hashing speed bounds theirs: the native addon runs
 * several GB/s, blake3-wasm about 0.6 GB/s on one thread. KERNELHOP_BLAKE3=wasm forces the portable one.
 */
export function blake3Backend(): Blake3Backend {
  return Private.backend();
}

export function digestEquals(a: Digest, b: Digest): boolean {
  return a.hash === b.hash && a.sizeBytes === b.sizeBytes;
}

function parseSize(sizePart: string, whole: string): number {
  if (!SIZE_RE.test(sizePart)) {
    throw new DigestError(
      `digest ${JSON.stringify(whole)} has size ${JSON.stringify(sizePart)}; expected a decimal integer without sign or leading zeros`,
    );
  }
  const n = Number(sizePart);
  if (!Number.isSafeInteger(n)) {
    throw new DigestError(`digest ${JSON.stringify(whole)} has a size too large to represent exactly`);
  }
  return n;
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}

namespace Private {
  let native: Blake3 | null | undefined;
  let chosen: Blake3Backend | undefined;

  export function backend(): Blake3Backend {
    return (chosen ??= chooseBackend());
  }

  export function loadNative(): Blake3 | null {
    if (native === undefined) {
      try {
        // Its platform builds are optional dependencies: a platform without one falls back to wasm.
        const addon = require('@napi-rs/blake-hash') as { blake3: Blake3 };
        native = addon.blake3;
      } catch {
        native = null;
      }
    }
    return native;
  }

  export function nativeBlake3(bytes: Uint8Array): Buffer {
    const hash = loadNative();
    if (hash === null) throw new Error('the native BLAKE3 addon (@napi-rs/blake-hash) has no build for this platform');
    return hash(bytes);
  }

  export function wasmBlake3(bytes: Uint8Array): Buffer {
    // The Node build of blake3-wasm returns a Buffer when no encoding is asked for.
    return wasmBlake3Hash(bytes) as Buffer;
  }

  function chooseBackend(): Blake3Backend {
    const forced = process.env.KERNELHOP_BLAKE3;
    if (forced === 'wasm') return 'wasm';
    if (forced !== undefined && forced !== '' && forced !== 'native') {
      throw new Error(`KERNELHOP_BLAKE3=${forced} is not "native" or "wasm"`);
    }
    if (loadNative() !== null) return 'native';
    if (forced === 'native') throw new Error('KERNELHOP_BLAKE3=native, but @napi-rs/blake-hash has no build here');
    return 'wasm';
  }
}
