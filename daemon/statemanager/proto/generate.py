"""Regenerate the committed stubs from the .proto files, or check that they match.

    python -m statemanager.proto.generate          # rewrite the stubs
    python -m statemanager.proto.generate --check  # exit 1 if a stub differs from the .proto

Needs grpcio-tools (the `test` extra); the daemon itself only needs the generated files.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PACKAGE_ROOT = PROTO_DIR.parent.parent  # daemon/: imports come out as statemanager.proto.X
OUTPUTS = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc  # noqa: PLC0415 - only this command needs grpcio-tools

    produced = []
    for proto in sorted(PROTO_DIR.glob("*.proto")):
        rel = proto.relative_to(PACKAGE_ROOT)
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PACKAGE_ROOT}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                str(rel),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {rel}")
        produced += [out_dir / rel.parent / f"{proto.stem}{suffix}" for suffix in OUTPUTS]
    return produced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    if not args.check:
        generate(PACKAGE_ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            fresh.name
            for fresh in generate(Path(tmp))
            if not filecmp.cmp(fresh, PROTO_DIR / fresh.name, shallow=False)
        ]
    for name in stale:
        print(f"stale: {PROTO_DIR / name} differs from its .proto; regenerate", file=sys.stderr)
    if not stale:
        print("generated stubs match the .proto files")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
