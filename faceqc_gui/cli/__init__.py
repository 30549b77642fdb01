"""`faceqc` command line: a thin shell over faceqc_gui.engine (no Qt here, ever)."""

from __future__ import annotations

import argparse
import sys

from ..engine.errors import FaceQCError


def build_parser() -> argparse.ArgumentParser:
    from . import models as models_cmd
    from . import project as project_cmd
    from . import score as score_cmd

    parser = argparse.ArgumentParser(prog="faceqc", description="Score, curate and export face-image datasets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    score_cmd.register(sub)
    models_cmd.register(sub)
    project_cmd.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FaceQCError as e:
        print(f"faceqc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("faceqc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
