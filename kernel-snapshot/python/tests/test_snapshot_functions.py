import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from kernelhop_snapshot import Capturer, DirectoryBlobStore
from snapshot_helpers import notebook

CELL = textwrap.dedent(
    """
    import math
    import numpy as np
    scale = 3

    def f(x):
        return x * scale + math.floor(0.5)

    square = lambda x: x * x

    def make_counter():
        n = 0
        def inc():
            nonlocal n
            n += 1
            return n
        def get():
            return n
        return inc, get

    inc, get = make_counter()
    inc()

    class Point:
        dims = 2
        def __init__(self, x, y):
            self.x, self.y = x, y
        def norm(self):
            return math.hypot(self.x, self.y) * scale
        def __eq__(self, other):
            return (self.x, self.y) == (other.x, other.y)

    class Point3(Point):
        dims = 3
        def norm(self):
            return super().norm() + 1

    p = Point(3, 4)
    q = Point3(0, 0)
    points = [Point(1, 1), Point(2, 2)]
    arr = np.arange(4)
    """
)


def test_notebook_functions_classes_and_modules(store):
    ns = notebook(CELL)
    cap = Capturer(store).capture(ns)
    assert cap.unpicklable == {}
    groups = [g.names for g in cap.manifest.groups]
    assert ("get", "inc") in groups  # they share a cell
    assert ("p",) in groups and ("q",) in groups  # instances of one notebook class need not travel together
    target = {}
    out = Capturer(store).restore(cap.manifest, globals=target)
    target.update(out)
    assert target["f"](2) == 6
    target["scale"] = 10  # notebook functions read the namespace they are restored into
    assert target["f"](2) == 20
    assert target["square"](7) == 49
    assert target["inc"]() == 2 and target["get"]() == 2
    assert target["p"].norm() == 50.0
    assert target["q"].norm() == 1.0
    assert isinstance(target["q"], target["Point"])
    assert target["math"] is __import__("math") and target["np"] is np


def test_restore_in_a_fresh_process(tmp_path):
    """A hop lands in another interpreter: classes and functions must come back by value from the bytes alone."""
    store = DirectoryBlobStore(tmp_path / "blobs")
    cap = Capturer(store).capture(notebook(CELL))
    (tmp_path / "m.json").write_bytes(cap.manifest.to_bytes())
    code = textwrap.dedent(
        """
        import json, sys
        from kernelhop_snapshot import DirectoryBlobStore, Manifest, restore
        m = Manifest.from_bytes(open(sys.argv[1], 'rb').read())
        ns = restore(m, DirectoryBlobStore(sys.argv[2]))
        print(json.dumps({
            "f": ns["f"](2), "norm": ns["p"].norm(), "norm3": ns["q"].norm(), "inc": ns["inc"](),
            "same_class": type(ns["p"]) is ns["Point"], "sub": isinstance(ns["q"], ns["Point"]),
            "points": [pt.norm() for pt in ns["points"]], "arr": ns["arr"].tolist(),
            "module": ns["Point"].__module__,
        }))
        """
    )
    env = dict(os.environ)
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.json"), str(tmp_path / "blobs")],
        check=True, capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    got = json.loads(r.stdout)
    assert got["f"] == 6 and got["norm"] == 15.0 and got["norm3"] == 1.0 and got["inc"] == 2
    assert got["same_class"] and got["sub"] and got["module"] == "__main__"
    assert got["arr"] == [0, 1, 2, 3]
