/** A `%%gpu` first line: the magic's name, then the class and any options. */
const GPU_MAGIC = /^%%gpu(?=[ \t]|$)(?:[ \t]+(\S+))?(.*)$/;

/** The class named on a cell's `%%gpu` line; null when the cell has none (it runs locally). */
export function gpuClassOf(source: string): string | null {
  const match = GPU_MAGIC.exec(firstLine(source));
  return match ? (match[1] ?? '') : null;
}

/**
 * The cell's source made to run on `gpuClass`: a `%%gpu` line is added, or an existing one's class replaced (its
 * other options kept), so choosing a class never stacks two cell magics.
 */
export function withGpuMagic(source: string, gpuClass: string): string {
  const first = firstLine(source);
  const match = GPU_MAGIC.exec(first);
  if (!match) {
    return source ? `%%gpu ${gpuClass}\n${source}` : `%%gpu ${gpuClass}\n`;
  }
  return `%%gpu ${gpuClass}${match[2] ?? ''}${source.slice(first.length)}`;
}

/** Whether a line is a `%%gpu` line; the editor marks it only as a cell's first line, where IPython reads it. */
export function isGpuMagicLine(line: string): boolean {
  return GPU_MAGIC.test(line);
}

function firstLine(source: string): string {
  const end = source.indexOf('\n');
  return end === -1 ? source : source.slice(0, end);
}
