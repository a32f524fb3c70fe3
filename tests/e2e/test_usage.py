"""Counting and seeing (issue 11): every hop's GPU-seconds land in the gateway's ledger under the user, notebook and
cell that ran it; `kernelhop usage`, `%gpu usage`, /metrics and the JSON log show the same figures of a real run."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from kernelhop_testing import Kernel, Stack

TIMINGS = "json.dumps(get_ipython().magics_manager.registry['GpuMagics'].hopper.last_timings)"


@pytest.fixture(scope="module")
def uma(stack: Stack) -> Iterator[str]:
    token = stack.admin_op("user_add", name="uma")["token"]
    yield token
    stack.admin_op("user_rm", name="uma")


def kernelhop(stack: Stack, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = stack.env(KERNELHOP_TOKEN=token)
    return subprocess.run([sys.executable, "-m", "kernelhop.cli", *args], env=env, capture_output=True, text=True)


def test_each_hop_is_counted_for_its_user_notebook_and_cell(
    stack: Stack, uma: str, make_kernel: Callable[[dict[str, str]], Kernel]
) -> None:
    kernel = make_kernel(stack.env(KERNELHOP_TOKEN=uma, JPY_SESSION_NAME="lab/train.ipynb"))
    kernel.run("import json")
    runtime_seconds = []
    for body in ("import time; time.sleep(1.0)", "x = sum(range(10))"):
        execution = kernel.run("%%gpu h100\n" + body)
        assert execution.status == "ok", execution.error_text
        runtime_seconds.append(json.loads(kernel.value(TIMINGS).strip("'"))["runtime_total_s"])

    done = kernelhop(stack, uma, "usage", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["total"]["runs"] == 2
    # The gateway counts from handing the run to the runtime to hearing it end; the runtime times the same span
    # from its side: the two agree but for the loopback's hops.
    counted, timed = report["total"]["gpuSeconds"], sum(runtime_seconds)
    assert timed <= counted + 0.01 and counted - timed <= 0.01 * timed + 0.25, (counted, timed)
    assert [r["key"] for r in report["by"]["notebook"]] == ["uma\tlab/train.ipynb"]
    cells = [r["key"].split("\t")[2] for r in report["by"]["cell"]]
    assert len(cells) == 2 and all(c.startswith("In [") for c in cells), cells  # no cell ids outside JupyterLab
    assert [r["key"] for r in report["by"]["gpu_class"]] == ["h100"]

    text = kernelhop(stack, uma, "usage", "--since", "1h").stdout
    assert "over 2 run(s)" in text and "uma / lab/train.ipynb" in text
    refused = kernelhop(stack, uma, "usage", "--user", "admin")
    assert refused.returncode == 1 and "for the admin" in refused.stderr
    bad = kernelhop(stack, uma, "usage", "--since", "last tuesday")
    assert bad.returncode == 1 and "24h" in bad.stderr
    shown = kernel.run("%gpu usage 1d")
    assert shown.status == "ok", shown.error_text
    assert "over 2 run(s)" in shown.stream_text("stdout")

    # The same GPU-seconds on /metrics, which only the admin may read.
    url = stack.ws_url.replace("ws://", "http://").replace("/ws/v1", "/metrics")
    with pytest.raises(urllib.error.HTTPError) as refused_metrics:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {uma}"}))
    assert refused_metrics.value.code == 403
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {stack.token}"})) as r:
        metrics = r.read().decode()
    series = 'kernelhop_gpu_seconds_total{user="uma",gpu_class="h100"}'
    line = next(x for x in metrics.splitlines() if x.startswith(series))
    assert abs(float(line.split()[-1]) - counted) < 0.01

    # The gateway's log: JSON lines, each run's start and end carrying its run id.
    entries = [json.loads(x) for x in stack.gateway.lines if x.startswith("{")]
    ended = [e for e in entries if e.get("user") == "uma" and e["msg"].startswith("run ended")]
    started = {e["run"] for e in entries if e.get("user") == "uma" and e["msg"].startswith("run started")}
    assert len(ended) == 2 and {e["run"] for e in ended} == started
    assert abs(sum(e["gpu_seconds"] for e in ended) - counted) < 0.01

