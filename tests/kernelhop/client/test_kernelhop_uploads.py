"""put_blobs through the gateway's HTTP upload endpoint, against a real gateway process: stored as a frame's blobs
are, refused blob by blob as a frame's are, and a client whose endpoint cannot be used sends frames instead."""

from __future__ import annotations

import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernelhop_snapshot import digest_of
from kernelhop_testing import bytes_moved

from kernelhop.cli.services import Service, start_gateway
from kernelhop.client.gateway import BATCH_BYTES, GatewayConnection, GatewayError, binary_head
from kernelhop.client.uploads import HttpUploads, UploadRefused, upload_url


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    token = secrets.token_hex(16)
    service = start_gateway(data=tmp_path_factory.mktemp("uploads") / "gw", token=token, port=0, grpc_port=0, echo=None)
    yield service, token
    service.stop()


def blobs(n: int, size: int) -> dict[str, bytes]:
    out = {}
    for _ in range(n):
        data = os.urandom(size)
        out[str(digest_of(data))] = data
    return out


def moved(gateway: tuple[Service, str], link: str) -> float:
    service, token = gateway
    return bytes_moved(service.ready["ws"], token, link, "in")


def test_blobs_go_through_the_upload_endpoint_and_are_stored(gateway: tuple[Service, str]) -> None:
    service, token = gateway
    client = GatewayConnection(service.ready["ws"], token)
    client.compress = False
    sent = blobs(40, 256 * 1024)  # 10 MiB: more than one request of the agreed batch bytes
    before_http, before_ws = moved(gateway, "http"), moved(gateway, "ws")
    assert client.put_blobs(sent) == sum(len(b) for b in sent.values())
    assert moved(gateway, "http") - before_http == sum(len(b) for b in sent.values())
    assert moved(gateway, "ws") == before_ws
    client.known.clear()
    assert client.find_missing(list(sent)) == []
    again = GatewayConnection(service.ready["ws"], token)
    assert again.get_blobs(list(sent)[:3]) == {d: sent[d] for d in list(sent)[:3]}
    client.close()
    again.close()


def test_a_blob_that_is_not_its_digest_is_refused_by_name(gateway: tuple[Service, str]) -> None:
    service, token = gateway
    client = GatewayConnection(service.ready["ws"], token)
    good, bad = blobs(1, 1000), blobs(1, 1000)
    (digest,) = bad
    with pytest.raises(GatewayError) as refused:
        client.put_blobs({**good, digest: b"x" * 1000})
    assert refused.value.code == "digest_mismatch"
    assert digest in str(refused.value)
    client.close()


def test_the_endpoint_checks_the_token_and_the_request(gateway: tuple[Service, str]) -> None:
    service, _ = gateway
    url = upload_url(service.ready["ws"], "blobs")
    wrong = HttpUploads(url, "not-the-token", tls=None, timeout=10, stall_s=10)
    head = binary_head({"op": "put_blobs", "blobs": []})
    with pytest.raises(UploadRefused) as e:
        wrong.post(head, [])
    assert e.value.status == 401
    with pytest.raises(UploadRefused) as e:
        HttpUploads(url, gateway[1], tls=None, timeout=10, stall_s=10).post(binary_head({"op": "find_missing"}), [])
    assert (e.value.status, e.value.error["code"]) == (400, "bad_request")
    assert "put_blobs" in e.value.error["message"]
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {gateway[1]}", "Content-Length": str(2 * BATCH_BYTES + 4)})
    with pytest.raises(urllib.error.HTTPError) as too_large:
        urllib.request.urlopen(request, timeout=10)
    assert too_large.value.code == 413


def test_a_client_whose_endpoint_cannot_be_used_sends_frames(gateway: tuple[Service, str], tmp_path: Path) -> None:
    service, token = gateway
    client = GatewayConnection(service.ready["ws"], token)
    client.compress = False
    client._conn()
    client.agreed.blob_upload = "not-an-endpoint"  # as a proxy that passes only the WebSocket would answer: 404
    sent = blobs(4, 100_000)
    before_ws = moved(gateway, "ws")
    client.put_blobs(sent)
    assert moved(gateway, "ws") - before_ws == sum(len(b) for b in sent.values())
    client.known.clear()
    assert client.find_missing(list(sent)) == []
    client.close()


def test_a_connection_the_gateway_closed_while_idle_is_replaced(gateway: tuple[Service, str]) -> None:
    service, token = gateway
    client = GatewayConnection(service.ready["ws"], token)
    client.compress = False
    client.put_blobs(blobs(2, 1000))
    time.sleep(6)  # past Node's keep-alive timeout (5 s): the gateway has closed the idle connection
    before = moved(gateway, "http")
    sent = blobs(16, 256 * 1024)  # more than a socket's buffer: sent on the closed connection, it breaks the pipe
    client.put_blobs(sent)
    assert moved(gateway, "http") - before == 16 * 256 * 1024
    client.close()
