export { Blake3Backend, Digest, DigestError, blake3Backend, digestEquals, digestOf, formatDigest, makeDigest, parseDigest } from './digest.js';
export { CanonicalJsonError, JsonValue, canonicalJson, compareCodePoints, encodeCanonical } from './canonicalJson.js';
export {
  ChunkedBytes,
  MANIFEST_KIND,
  MANIFEST_VERSION,
  Manifest,
  ManifestError,
  ManifestFiles,
  ManifestGroup,
  Unpicklable,
  encodeManifest,
  manifestBlobDigests,
  manifestFilesTree,
  reachedBlobDigests,
  manifestDigest,
  parseManifest,
  parseManifestBytes,
} from './manifest.js';
export { ReadBlobs, TREE_KIND, TREE_VERSION, TreeDirectory, TreeError, TreeWalk, parseTreeBytes, treeBlobDigests } from './tree.js';
