// Blobs may travel zstd-compressed from kernels, whose uplink is where bytes cost most. The store keeps them raw and
// every digest covers the uncompressed bytes, so a codec changes the wire, never the content address.
import { decompress } from 'fzstd';

export const CODECS = ['zstd'] as const;
export type Codec = (typeof CODECS)[number];

export function isCodec(value: unknown): value is Codec {
  return typeof value === 'string' && (CODECS as readonly string[]).includes(value);
}

/**
 * The raw bytes of a blob sent with `codec`, decoded into exactly `size` bytes: the output can never outgrow the blob
 * it claims to be, and whatever comes out is then verified against the digest like any upload.
 */
export function decodeBlob(codec: Codec, data: Uint8Array, size: number): Uint8Array {
  switch (codec) {
    case 'zstd':
      return decompress(data, new Uint8Array(size));
  }
}
