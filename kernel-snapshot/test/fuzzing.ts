// Shared by the fuzz tests of kernel-snapshot and the gateway: run bounds, and mutations of valid inputs.
import fc from 'fast-check';

const seconds = Number(process.env.KERNELHOP_FUZZ_SECONDS ?? 0);
/**
 * `numRuns` runs for the test command; under KERNELHOP_FUZZ_SECONDS (benchmarks/fuzz.py), as many as fit in that time.
 */
export function runsOf(numRuns: number): fc.Parameters<unknown> {
  return seconds > 0 ? { numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: seconds * 1000 } : { numRuns };
}

export const params = runsOf(2000);

/** Runs `parse`; passes when it returns or throws `domain`, fails on any other exception. */
export function onlyDomainErrors(parse: () => unknown, domain: new (...a: never[]) => Error): void {
  try {
    parse();
  } catch (e) {
    if (!(e instanceof domain)) throw new Error(`threw ${String(e)} instead of a ${domain.name}`, { cause: e });
  }
}

/** Valid bytes with a few bytes flipped, inserted, dropped, or cut short. */
export function mutated(valid: Uint8Array): fc.Arbitrary<Uint8Array> {
  const edit = fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 8 }) }),
    fc.record({ kind: fc.constant('drop' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
    fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  );
  return fc.array(edit, { minLength: 1, maxLength: 4 }).map((edits) => {
    let b = Buffer.from(valid);
    for (const e of edits) {
      const at = e.at % (b.length + 1);
      if (e.kind === 'flip' && b.length > 0) b[at % b.length] = e.byte;
      else if (e.kind === 'insert') b = Buffer.concat([b.subarray(0, at), e.bytes, b.subarray(at)]);
      else if (e.kind === 'drop') b = Buffer.concat([b.subarray(0, at), b.subarray(at + e.n)]);
      else if (e.kind === 'cut') b = b.subarray(0, at);
    }
    return b;
  });
}

/** A valid JSON value with one value somewhere inside it replaced by an arbitrary JSON value. */
export function replacedInside(valid: unknown): fc.Arbitrary<unknown> {
  return fc.tuple(fc.nat(), fc.jsonValue()).map(([pick, replacement]) => {
    const copy = structuredClone(valid);
    const slots: Array<[Record<string, unknown>, string]> = [];
    const visit = (v: unknown): void => {
      if (typeof v !== 'object' || v === null) return;
      for (const k of Object.keys(v)) {
        slots.push([v as Record<string, unknown>, k]);
        visit((v as Record<string, unknown>)[k]);
      }
    };
    visit(copy);
    if (slots.length === 0) return replacement;
    const [holder, key] = slots[pick % slots.length];
    holder[key] = replacement;
    return copy;
  });
}
