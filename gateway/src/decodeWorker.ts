// Runs in a worker thread of codecs.ts's pool: one blob decoded into exactly its size, off the event loop.
import { decompress } from 'fzstd';
import { Piscina } from 'piscina';

export default function decode({ data, size }: { data: Uint8Array; size: number }): unknown {
  const out = decompress(data, new Uint8Array(size));
  // Handed back, not copied: the blob may be 48 MiB.
  return Piscina.move(out);
}
