import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from kernelhop_snapshot import Capturer, DeviceMap, MemoryBlobStore  # noqa: E402
from snapshot_helpers import round_trip  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64,
                                   torch.int8, torch.uint8, torch.bool, torch.complex64])  # fmt: skip
def test_dtypes(store, dtype):
    t = (torch.arange(24) % 7).reshape(4, 6).to(dtype)
    out = round_trip({"t": t}, store)["t"]
    assert out.dtype == dtype and out.shape == t.shape and torch.equal(out, t)


def test_buffers_travel_out_of_band(store):
    t = torch.randn(256, 1024)
    cap = Capturer(store).capture({"t": t})
    group = cap.manifest.groups[0]
    assert group.pickle.size < 2000
    assert [b.size for b in group.buffers] == [t.numel() * 4]


def test_views_requires_grad_and_parameters(store):
    base = torch.arange(60.0).reshape(6, 10)
    w = torch.randn(3, 3, requires_grad=True)
    w.grad = torch.ones(3, 3)
    ns = {"base": base, "t": base.t(), "col": base[:, 2], "w": w, "p": torch.nn.Parameter(torch.ones(2))}
    out = round_trip(ns, store)
    assert not out["t"].is_contiguous() and torch.equal(out["t"], base.t())
    assert out["t"].stride() == base.t().stride()
    out["base"][1, 2] = -5
    assert out["col"][1] == -5 and out["t"][2, 1] == -5
    assert out["w"].requires_grad and out["w"].is_leaf and torch.equal(out["w"].grad, torch.ones(3, 3))
    assert isinstance(out["p"], torch.nn.Parameter) and out["p"].requires_grad


def test_tensor_with_graph_is_reported(store):
    x = torch.ones(2, requires_grad=True)
    cap = Capturer(store).capture({"x": x, "y": (x * 2).sum()})
    assert "grad_fn" in cap.unpicklable["y"]
    assert [g.names for g in cap.manifest.groups] == [("x",)]


def test_module_and_optimizer_share_parameters(store):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(16, 4)).pow(2).mean().backward()
    opt.step()
    cap = Capturer(store).capture({"model": model, "opt": opt})
    assert [g.names for g in cap.manifest.groups] == [("model", "opt")]
    out = Capturer(store).restore(cap.manifest)
    m2, o2 = out["model"], out["opt"]
    x = torch.randn(5, 4)
    assert torch.equal(m2(x), model(x))
    assert o2.param_groups[0]["params"][0] is m2[0].weight
    assert torch.equal(o2.state[m2[0].weight]["exp_avg"], opt.state[model[0].weight]["exp_avg"])
    m2(x).sum().backward()
    o2.step()  # the restored optimizer drives the restored model


def test_numpy_views_of_a_tensor_still_view_it(store):
    import numpy as np

    t = torch.arange(12.0).reshape(3, 4)
    ns = {"t": t, "whole": t.numpy(), "transposed": t.T.numpy(), "row": t[1].numpy()[1:]}
    cap = Capturer(store).capture(ns)
    assert [g.names for g in cap.manifest.groups] == [("row", "t", "transposed", "whole")]
    out = Capturer(store).restore(cap.manifest)
    for name in ("whole", "transposed", "row"):
        assert type(out[name]) is np.ndarray and out[name].strides == ns[name].strides, name
        assert np.array_equal(out[name], ns[name]), name
    out["t"][1, 2] = -1.0  # the arrays were copies of their own before
    assert out["whole"][1, 2] == -1.0 and out["transposed"][2, 1] == -1.0 and out["row"][1] == -1.0


class SimulatedGpu(DeviceMap):
    """A device map on a CPU-only host that pretends tensors were on (and can go back to) ``cuda:1``."""

    def __init__(self, gpu_here: bool) -> None:
        self.gpu_here = gpu_here
        self.placed: list[str] = []

    def source_device(self, tensor):
        return "cuda:1"

    def available(self, device):
        return device == "cpu" or self.gpu_here

    def place(self, storage, device):
        if self.available(device) and device != "cpu":
            self.placed.append(device)
        return storage  # the bytes stay on the CPU: there is no GPU to put them on


def test_simulated_cuda_comes_home_as_cpu_and_goes_back():
    store = MemoryBlobStore()
    t = torch.arange(6.0).reshape(2, 3)
    cap = Capturer(store, devices=SimulatedGpu(gpu_here=True)).capture({"t": t, "v": t[1]})

    home = SimulatedGpu(gpu_here=False)
    out = Capturer(store, devices=home).restore(cap.manifest)
    assert home.placed == [] and out["t"].device.type == "cpu" and torch.equal(out["t"], t)

    remote = SimulatedGpu(gpu_here=True)
    out = Capturer(store, devices=remote).restore(cap.manifest)
    assert remote.placed == ["cuda:1"]  # one storage, shared by both tensors
    assert out["v"].untyped_storage().data_ptr() == out["t"].untyped_storage().data_ptr()


def test_default_device_map_falls_back_to_cpu():
    devices = DeviceMap()
    assert devices.available("cpu")
    assert devices.available("cuda:0") == torch.cuda.is_available()
    assert not devices.available("cuda:99")


def test_torch_is_not_imported_without_tensors(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from kernelhop_snapshot import capture, restore, MemoryBlobStore\n"
        "s = MemoryBlobStore()\n"
        "c = capture({'x': np.arange(3), 'l': [1]}, s)\n"
        "restore(c.manifest, s)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
