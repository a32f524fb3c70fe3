"""Records signed in Python verify in the gateway (TypeScript): both encode them canonically the same way."""

from __future__ import annotations

from kernelhop_snapshot import Capturer, Manifest

from kernelhop.client.hop_store import HopStore
from kernelhop.signing import Keyring, fingerprint, record_id, verify


def test_tricky_strings_sign_and_verify_across_languages(users):
    api = users["alice"].api()
    api.store = HopStore()
    cap = Capturer(api.store).capture({"s": "é😀\t\u2028\x01"})
    cells = ['s = "é😀\\t"', "x = 1\n\ty = 2", "\u2028\x01\x7f\u00a0", "日本語", '"quotes" \\ backslash']
    sid = api.save(
        cap.manifest,
        cap.digest,
        parents=[],
        message="ünïcødé ✓",
        notebook="dir/ノート.ipynb",
        cells=cells,
        environment={"python": "3.11.7", "packages": {"numpy": "1.26.4"}},
    )
    reply = api.get(sid)
    assert record_id(reply["record"]) == sid
    assert verify(reply["record"], reply["signature"])
    assert reply["record"]["cells"] == cells
    assert Manifest.from_bytes(api.store.get(cap.digest)) == cap.manifest


def test_keys_are_private_and_trust_is_per_key(tmp_path):
    ring = Keyring(tmp_path)
    key = ring.public_key("zoe")
    assert (ring.key_path("zoe").stat().st_mode & 0o777) == 0o600
    assert ring.public_key("zoe") == key  # made once, then read
    assert ring.is_trusted(key, "zoe")
    other = Keyring(tmp_path / "other").public_key("zoe")
    assert not ring.is_trusted(other, "zoe")
    ring.trust(other, "zoe")
    assert ring.is_trusted(other, None)
    assert len(fingerprint(other)) == 16
