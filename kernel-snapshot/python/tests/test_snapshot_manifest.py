import json

import pytest
from kernelhop_snapshot import Digest, Manifest, ManifestError, MemoryBlobStore, capture, digest_of
from snapshot_helpers import FIXTURES


def test_fixture_round_trips_to_canonical_bytes():
    m = Manifest.from_bytes((FIXTURES / "manifest-v1.json").read_bytes())
    canonical = (FIXTURES / "manifest-v1.canonical.json").read_bytes()
    assert m.to_bytes() == canonical
    assert str(digest_of(m.to_bytes())) == (FIXTURES / "manifest-v1.digest").read_text().strip()
    assert Manifest.from_bytes(canonical) == m


def test_fixture_contents():
    m = Manifest.from_bytes((FIXTURES / "manifest-v1.json").read_bytes())
    assert [g.names for g in m.groups] == [("a", "b"), ("Z", "é", "f"), ("😀", "ﬁx")]
    assert m.unpicklable["fh"]["type"] == "_io.TextIOWrapper"
    chunks = json.loads((FIXTURES / "manifest-v1.chunks.json").read_text())["chunks"]
    assert m.blob_digests() == {Digest.parse(c["digest"]) for c in chunks}
    for c in chunks:
        data = bytes((i * 7 + c["seed"]) % 256 for i in range(c["len"]))
        assert str(digest_of(data)) == c["digest"]


def _invalid_cases():
    return json.loads((FIXTURES / "manifest-invalid.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", _invalid_cases(), ids=lambda c: c["why"])
def test_invalid_fixtures_are_refused(case):
    with pytest.raises(ManifestError):
        Manifest.from_json(case["manifest"])


def test_captured_manifest_is_canonical_and_stored():
    store = MemoryBlobStore()
    cap = capture({"x": [1, 2, 3], "s": "é"}, store, meta={"session": "s1"})
    data = bytes(store.get(cap.digest))
    assert data == cap.manifest.to_bytes()
    obj = json.loads(data)
    assert data == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert obj["kind"] == "kernelhop.snapshot" and obj["version"] == 1
    assert obj["meta"]["parent"] is None and obj["meta"]["session"] == "s1"
    assert obj["meta"]["created"].endswith("Z")
    assert cap.digest in cap.new_blobs and cap.new_blobs[-1] == cap.digest
    assert Manifest.from_bytes(data) == cap.manifest


def test_parent_is_recorded():
    store = MemoryBlobStore()
    first = capture({"x": 1}, store)
    second = capture({"x": 2}, store, parent=first.digest)
    assert second.manifest.meta["parent"] == str(first.digest)


def test_not_json_is_refused():
    with pytest.raises(ManifestError, match="JSON"):
        Manifest.from_bytes(b"\xff")
