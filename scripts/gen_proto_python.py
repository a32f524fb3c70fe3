"""Generates the Python modules of proto/ (kernelhop_proto.v1.*_pb2) with grpcio-tools' protoc.

The modules are committed, so installing kernelhop needs only the `protobuf` runtime, not a compiler; the test
tests/proto/test_schema.py regenerates them and fails when they differ from proto/ (a message changed on one side).
  .venv/bin/python scripts/gen_proto_python.py [--out DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "proto" / "python" / "kernelhop_proto" / "v1"


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "kernelhop" / "v1").glob("*.proto"))
    includes = pathlib.Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(["protoc", f"-I{PROTO}", f"-I{includes}", f"--python_out={tmp}", *sources])
        if rc != 0:
            raise SystemExit(f"protoc failed ({rc}) on {sources}")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for path in sorted((pathlib.Path(tmp) / "kernelhop" / "v1").glob("*_pb2.py")):
            # protoc names imports after the proto's path (kernelhop.v1), which is the kernelhop package here.
            text = re.sub(r"^from kernelhop\.v1 import ", "from . import ", path.read_text(), flags=re.M)
            target = out / path.name
            target.write_text(text)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path, file=sys.stderr)


if __name__ == "__main__":
    main()
