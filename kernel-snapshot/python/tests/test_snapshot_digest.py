import json

import pytest
from kernelhop_snapshot import Digest, digest_of
from snapshot_helpers import FIXTURES


def _vectors():
    path = FIXTURES / "blake3-vectors.json"
    return json.loads(path.read_text(encoding="utf-8"))["vectors"]


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: str(v.get("input_len", v.get("input_utf8"))))
def test_blake3_vectors(vector):
    if "input_len" in vector:
        assert vector["pattern"] == "i % 251"
        data = bytes(i % 251 for i in range(vector["input_len"]))
    else:
        data = vector["input_utf8"].encode("utf-8")
    d = digest_of(data)
    assert d.hash == vector["hash"]
    assert str(d) == vector["digest"]
    assert Digest.parse(vector["digest"]) == d
    assert digest_of(memoryview(data)) == d


def test_digest_str_and_parse():
    d = Digest("a" * 64, 12)
    assert str(d) == "a" * 64 + "/12"
    assert Digest.parse(str(d)) == d


@pytest.mark.parametrize(
    "text",
    ["", "abc/1", "A" * 64 + "/1", "a" * 64, "a" * 64 + "/", "a" * 64 + "/-1", "a" * 64 + "/01", "a" * 63 + "/1"],
)
def test_parse_rejects_malformed(text):
    with pytest.raises(ValueError, match="digest"):
        Digest.parse(text)


def test_constructor_validates():
    with pytest.raises(ValueError):
        Digest("xyz", 1)
    with pytest.raises(ValueError):
        Digest("a" * 64, -1)
