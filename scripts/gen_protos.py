"""Regenerates the Python stubs under koverage/ from the contracts in proto/.

Run `python scripts/gen_protos.py` after editing a .proto file;
`python scripts/gen_protos.py --check` exits 1 when the committed stubs
differ from what the contracts generate (CI runs it).
"""

import argparse
import filecmp
import pathlib
import shutil
import sys
import tempfile

import grpc_tools
from grpc_tools import protoc

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_PROTO_DIR = _ROOT / "proto"
_OUT_DIR = _ROOT / "koverage"
_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail on drift")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        generated = _generate(pathlib.Path(tmp))
        if args.check:
            return _report_drift(generated)
        _install(generated)
    return 0


def _generate(tmp: pathlib.Path) -> pathlib.Path:
    protos = sorted(str(p.relative_to(_PROTO_DIR)) for p in _PROTO_DIR.rglob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{_PROTO_DIR}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    # Every generated directory becomes a package so the stubs import as
    # koverage.<service>.v1.<name>_pb2.
    for directory in (tmp / "koverage").rglob("*"):
        if directory.is_dir():
            (directory / "__init__.py").touch()
    return tmp / "koverage"


def _generated_files(root: pathlib.Path) -> set[pathlib.Path]:
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and (p.name.endswith(_GENERATED_SUFFIXES))
    }


def _report_drift(generated: pathlib.Path) -> int:
    fresh = _generated_files(generated)
    committed = {
        p
        for p in _generated_files(_OUT_DIR)
        if p.parts[0] in {"chat", "router", "evaluation", "telemetry"}
    }
    drift = sorted(str(p) for p in fresh ^ committed)
    drift += sorted(
        str(p)
        for p in fresh & committed
        if not filecmp.cmp(generated / p, _OUT_DIR / p, shallow=False)
    )
    if drift:
        print("generated stubs are out of date; run scripts/gen_protos.py:")
        for name in drift:
            print(f"  koverage/{name}")
        return 1
    print(f"{len(fresh)} generated files match proto/")
    return 0


def _install(generated: pathlib.Path) -> None:
    for path in generated.rglob("*"):
        if path.is_file():
            target = _OUT_DIR / path.relative_to(generated)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.name != "__init__.py" or not target.exists():
                shutil.copyfile(path, target)


if __name__ == "__main__":
    sys.exit(main())
