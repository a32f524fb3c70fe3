"""What the kernel side verifies a wss:// gateway by, and when it sends the Hub's token (config.py, tls.py)."""

import json
import ssl

import pytest

from kernelhop.config import ConfigError, discover
from kernelhop.tls import TlsSettingError, client_context, normalize_fingerprint

FP = ":".join(["AB"] * 32)


def test_ca_and_fingerprint_from_the_environment(tmp_path):
    cfg = discover(
        {
            "KERNELHOP_HOME": str(tmp_path),
            "KERNELHOP_GATEWAY": "wss://gw.example:8731",
            "KERNELHOP_CA": "/etc/kernelhop/ca.pem",
            "KERNELHOP_FINGERPRINT": "ab" * 32,
        }
    )
    assert (cfg.url, cfg.ca, cfg.fingerprint) == ("wss://gw.example:8731/ws/v1", "/etc/kernelhop/ca.pem", FP)


def test_gateway_json_ca_is_used_only_for_its_own_gateway(tmp_path):
    (tmp_path / "gateway.json").write_text(
        json.dumps({"url": "wss://127.0.0.1:8731/ws/v1", "ca": str(tmp_path / "tls/ca.pem"), "fingerprint": FP})
    )
    mine = discover({"KERNELHOP_HOME": str(tmp_path)})
    assert (mine.ca, mine.fingerprint) == (str(tmp_path / "tls/ca.pem"), FP)
    other = discover({"KERNELHOP_HOME": str(tmp_path), "KERNELHOP_GATEWAY": "wss://elsewhere:8731"})
    assert (other.ca, other.fingerprint) == (None, None)


def test_a_bad_fingerprint_says_where_to_copy_it_from(tmp_path):
    with pytest.raises(ConfigError, match="kernelhop gateway TLS certificate sha256"):
        discover({"KERNELHOP_HOME": str(tmp_path), "KERNELHOP_FINGERPRINT": "abc"})
    assert normalize_fingerprint("sha256:" + "0f" * 32) == ":".join(["0F"] * 32)


def test_a_missing_ca_file_is_named():
    with pytest.raises(TlsSettingError, match="/nonexistent/ca.pem"):
        client_context("/nonexistent/ca.pem", None)
    pinned = client_context(None, FP)
    assert pinned.verify_mode == ssl.CERT_NONE and pinned.kernelhop_pin == FP  # the pin is checked after the handshake


@pytest.mark.parametrize(
    ("url", "sent"),
    [("wss://gw.example:8731", True), ("ws://127.0.0.1:8731", True), ("ws://gw.example:8731", False)],
)
def test_the_hubs_token_goes_over_tls_or_to_this_host_only(tmp_path, url, sent):
    env = {"KERNELHOP_HOME": str(tmp_path), "KERNELHOP_GATEWAY": url, "JUPYTERHUB_API_TOKEN": "hub-token"}
    cfg = discover(env)
    assert (cfg.token == "hub-token") is sent
    assert discover({**env, "KERNELHOP_TOKEN": "own"}).token == "own"  # a kernelhop token of its own wins
