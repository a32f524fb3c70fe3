// Blobs may travel zstd-compressed from kernels, whose uplink is where bytes cost most. The store keeps them raw and
// every digest covers the uncompressed bytes, so a codec changes the wire, never the content address.
import * as os from 'node:os';
import * as path from 'node:path';
import { Piscina } from 'piscina';

export const CODECS = ['zstd'] as const;
export type Codec = (typeof CODECS)[number];

export function isCodec(value: unknown): value is Codec {
  return typeof value === 'string' && (CODECS as readonly string[]).includes(value);
}

/**
 * Decoding runs on worker threads: a small frame may decode into a 48 MiB blob (a zstd bomb), which on the event loop
 * would stall every other user's requests. Created on first use, so a gateway that never sees zstd starts none.
 */
let pool: Piscina | undefined;

function decoders(): Piscina {
  pool ??= new Piscina({
    filename: path.resolve(__dirname, 'decodeWorker.js'),
    maxThreads: Math.max(2, Math.floor(os.availableParallelism() / 2)),
    idleTimeout: 30_000,
  });
  return pool;
}

/**
 * The raw bytes of a blob sent with `codec`, decoded into exactly `size` bytes: the output can never outgrow the blob
 * it claims to be, and whatever comes out is then verified against the digest like any upload.
 */
export async function decodeBlob(codec: Codec, data: Uint8Array, size: number): Promise<Uint8Array> {
  switch (codec) {
    case 'zstd': {
      // A copy of just these bytes, moved to the thread: cloning a view would copy the whole frame it lies in.
      const own = new Uint8Array(data);
      return (await decoders().run({ data: own, size }, { transferList: [own.buffer] })) as Uint8Array;
    }
  }
}

/** Ends the decoding threads (the gateway is stopping). */
export async function closeDecoders(): Promise<void> {
  const p = pool;
  pool = undefined;
  await p?.destroy();
}
