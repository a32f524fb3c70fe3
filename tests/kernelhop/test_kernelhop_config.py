import json

import pytest

from kernelhop.config import DEFAULT_URL, ConfigError, discover, normalize_url, recipe_max_s


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ws://127.0.0.1:8731", "ws://127.0.0.1:8731/ws/v1"),
        ("ws://127.0.0.1:8731/", "ws://127.0.0.1:8731/ws/v1"),
        ("ws://127.0.0.1:8731/ws/v1", "ws://127.0.0.1:8731/ws/v1"),
        ("ws://gw.example:9000/ws/v1/", "ws://gw.example:9000/ws/v1"),
        ("http://gw.example:9000", "ws://gw.example:9000/ws/v1"),
        ("https://gw.example", "wss://gw.example/ws/v1"),
        ("gw.example:8731", "ws://gw.example:8731/ws/v1"),
    ],
)
def test_normalize_url(given, expected):
    assert normalize_url(given) == expected


@pytest.mark.parametrize("bad", ["ftp://x:1", "ws://:8731", "ws://host:notaport"])
def test_normalize_url_refuses(bad):
    with pytest.raises(ConfigError, match="gateway URL"):
        normalize_url(bad)


def test_default_without_env_or_file(tmp_path):
    cfg = discover({"KERNELHOP_HOME": str(tmp_path)})
    assert cfg.url == DEFAULT_URL == "ws://127.0.0.1:8731/ws/v1"
    assert cfg.token is None


def test_env_wins_over_file(tmp_path):
    (tmp_path / "gateway.json").write_text(json.dumps({"url": "ws://127.0.0.1:9999", "token": "file-token"}))
    cfg = discover(
        {"KERNELHOP_HOME": str(tmp_path), "KERNELHOP_GATEWAY": "ws://10.0.0.5:8731", "KERNELHOP_TOKEN": "env-token"}
    )
    assert (cfg.url, cfg.token) == ("ws://10.0.0.5:8731/ws/v1", "env-token")
    assert "KERNELHOP_GATEWAY" in cfg.source and "KERNELHOP_TOKEN" in cfg.source


def test_file_gives_url_and_token(tmp_path):
    (tmp_path / "gateway.json").write_text(json.dumps({"url": "ws://127.0.0.1:9999", "token": "file-token"}))
    cfg = discover({"KERNELHOP_HOME": str(tmp_path)})
    assert (cfg.url, cfg.token) == ("ws://127.0.0.1:9999/ws/v1", "file-token")
    assert str(tmp_path / "gateway.json") in cfg.source


def test_file_token_used_for_same_gateway_named_in_env(tmp_path):
    (tmp_path / "gateway.json").write_text(json.dumps({"url": "ws://127.0.0.1:9999/ws/v1", "token": "file-token"}))
    cfg = discover({"KERNELHOP_HOME": str(tmp_path), "KERNELHOP_GATEWAY": "ws://127.0.0.1:9999"})
    assert cfg.token == "file-token"


def test_file_token_not_sent_to_another_gateway(tmp_path):
    (tmp_path / "gateway.json").write_text(json.dumps({"url": "ws://127.0.0.1:9999", "token": "file-token"}))
    cfg = discover({"KERNELHOP_HOME": str(tmp_path), "KERNELHOP_GATEWAY": "ws://elsewhere:8731"})
    assert cfg.token is None


def test_kernelhop_home_defaults_to_dot_kernelhop(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".kernelhop").mkdir()
    (tmp_path / ".kernelhop" / "gateway.json").write_text(json.dumps({"url": "ws://h:1", "token": "t"}))
    cfg = discover({})
    assert (cfg.url, cfg.token) == ("ws://h:1/ws/v1", "t")


def test_broken_file_says_which(tmp_path):
    (tmp_path / "gateway.json").write_text("{not json")
    with pytest.raises(ConfigError, match="gateway.json is not valid JSON"):
        discover({"KERNELHOP_HOME": str(tmp_path)})


def test_file_with_wrong_types(tmp_path):
    (tmp_path / "gateway.json").write_text(json.dumps({"url": 8731}))
    with pytest.raises(ConfigError, match="'url' must be a string"):
        discover({"KERNELHOP_HOME": str(tmp_path)})


def test_the_recipe_cost_bound_is_a_setting():
    assert recipe_max_s({}) == 1.0
    assert recipe_max_s({"KERNELHOP_RECIPE_MAX_S": " 0.25 "}) == 0.25
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(ConfigError, match="KERNELHOP_RECIPE_MAX_S must be a number of seconds, 0 or more"):
            recipe_max_s({"KERNELHOP_RECIPE_MAX_S": bad})


def test_several_gateways_as_a_comma_list(tmp_path):
    """Several gateways (ARCHITECTURE.md): the first is the one used; KERNELHOP_TOKEN goes to each of them."""
    env = {"KERNELHOP_HOME": str(tmp_path), "KERNELHOP_GATEWAY": "a:1, wss://b/ws/v1,a:1", "KERNELHOP_TOKEN": "t"}
    cfg = discover(env)
    assert cfg.urls == ("ws://a:1/ws/v1", "wss://b/ws/v1")
    assert cfg.url == "ws://a:1/ws/v1"
    assert cfg.token == "t" and cfg.token_everywhere
    with pytest.raises(ConfigError, match="names no gateway"):
        discover({"KERNELHOP_HOME": str(tmp_path), "KERNELHOP_GATEWAY": " , "})


def test_a_file_token_goes_only_to_the_gateway_that_wrote_it(tmp_path):
    (tmp_path / "gateway.json").write_text(json.dumps({"url": "ws://a:1/ws/v1", "token": "secret"}))
    cfg = discover({"KERNELHOP_HOME": str(tmp_path), "KERNELHOP_GATEWAY": "ws://a:1,ws://b:2"})
    assert (cfg.token, cfg.token_everywhere) == ("secret", False)
