// Canonical JSON: byte-equal to Python's
//   json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
// for strings, integers, booleans, null, arrays and objects. Floats are refused: Python's and JavaScript's
// float spellings differ (1e16 vs 1e+16), and a manifest has none.

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export class CanonicalJsonError extends Error {
  override name = 'CanonicalJsonError';
}

// In a /u regex a surrogate code unit only matches when it is unpaired.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

export function canonicalJson(value: unknown): string {
  const parts: string[] = [];
  write(value, '$', parts);
  return parts.join('');
}

export function encodeCanonical(value: unknown): Buffer {
  return Buffer.from(canonicalJson(value), 'utf8');
}

/** Python sorts str keys by code point; JavaScript's default sort compares UTF-16 code units. */
export function compareCodePoints(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const ca = a.codePointAt(i) as number;
    const cb = b.codePointAt(j) as number;
    if (ca !== cb) return ca < cb ? -1 : 1;
    i += ca > 0xffff ? 2 : 1;
    j += cb > 0xffff ? 2 : 1;
  }
  const restA = a.length - i;
  const restB = b.length - j;
  return restA === restB ? 0 : restA < restB ? -1 : 1;
}

function write(value: unknown, path: string, out: string[]): void {
  if (value === null) {
    out.push('null');
  } else if (typeof value === 'boolean') {
    out.push(value ? 'true' : 'false');
  } else if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) {
      throw new CanonicalJsonError(`${path}: ${value} is not an integer in ±2^53; canonical JSON holds integers only`);
    }
    out.push(Object.is(value, -0) ? '0' : String(value));
  } else if (typeof value === 'string') {
    out.push(encodeString(value, path));
  } else if (Array.isArray(value)) {
    out.push('[');
    value.forEach((item, k) => {
      if (k > 0) out.push(',');
      write(item, `${path}[${k}]`, out);
    });
    out.push(']');
  } else if (typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj).sort(compareCodePoints);
    out.push('{');
    keys.forEach((key, k) => {
      if (k > 0) out.push(',');
      out.push(encodeString(key, `${path} key`));
      out.push(':');
      write(obj[key], `${path}.${key}`, out);
    });
    out.push('}');
  } else {
    throw new CanonicalJsonError(`${path}: ${typeof value} has no canonical JSON form`);
  }
}

function encodeString(s: string, path: string): string {
  // Python's encode() fails on lone surrogates; Buffer.from would silently write U+FFFD instead.
  if (LONE_SURROGATE.test(s)) {
    throw new CanonicalJsonError(`${path}: string holds a lone UTF-16 surrogate and has no UTF-8 form`);
  }
  // JSON.stringify escapes exactly what Python does with ensure_ascii=False: " \ \b \f \n \r \t as short
  // escapes, other controls below U+0020 as lowercase \u00xx, everything else raw.
  return JSON.stringify(s);
}
