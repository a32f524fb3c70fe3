// Shared-token authentication for both APIs.
import { createHash, timingSafeEqual } from 'node:crypto';

export class TokenAuth {
  private readonly expected: Buffer;

  constructor(token: string) {
    // Compare fixed-length hashes so neither the comparison time nor an early length check leaks the token's length.
    this.expected = sha256(token);
  }

  check(candidate: string | undefined | null): boolean {
    if (candidate === undefined || candidate === null || candidate === '') return false;
    return timingSafeEqual(this.expected, sha256(candidate));
  }

  /** Accepts an `Authorization` header value of the form `Bearer TOKEN`. */
  checkBearer(header: string | undefined | null): boolean {
    if (typeof header !== 'string') return false;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    return m !== null && this.check(m[1]);
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}
