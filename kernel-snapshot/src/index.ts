export { Blake3Backend, Digest, DigestError, blake3Backend, digestEquals, digestOf, formatDigest, makeDigest, parseDigest } from './digest.js';
export { CanonicalJsonError, JsonValue, canonicalJson, compareCodePoints, encodeCanonical } from './canonicalJson.js';
export {
  ChunkedBytes,
  MANIFEST_KIND,
  MANIFEST_VERSION,
  Manifest,
  ManifestError,
  ManifestGroup,
  Unpicklable,
  encodeManifest,
  manifestBlobDigests,
  reachedBlobDigests,
  manifestDigest,
  parseManifest,
  parseManifestBytes,
} from './manifest.js';
