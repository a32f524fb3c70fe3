"""kernelhop's snapshot engine: capture a Python namespace into content-addressed chunks and restore it.

See docs/FORMAT.md.
"""

from .blobstore import BlobStore, DirectoryBlobStore, MemoryBlobStore
from .capturer import Capture, Capturer, capture, restore
from .diff import ManifestDiff, diff
from .digest import Digest, digest_of
from .errors import CorruptBlobError, MissingBlobError
from .manifest import BlobRef, FilesRef, Group, Manifest, ManifestError
from .namespace import user_namespace
from .placeholders import Placeholder, RemoteOnly, RemoteOnlyError, UnavailableVariableError
from .reach import cell_reach
from .reducers import DeviceMap
from .restoring import RestoreError

__all__ = [
    "BlobRef",
    "BlobStore",
    "Capture",
    "Capturer",
    "CorruptBlobError",
    "DeviceMap",
    "Digest",
    "DirectoryBlobStore",
    "FilesRef",
    "Group",
    "Manifest",
    "ManifestDiff",
    "ManifestError",
    "MemoryBlobStore",
    "MissingBlobError",
    "Placeholder",
    "RemoteOnly",
    "RemoteOnlyError",
    "RestoreError",
    "UnavailableVariableError",
    "capture",
    "cell_reach",
    "diff",
    "digest_of",
    "restore",
    "user_namespace",
]
