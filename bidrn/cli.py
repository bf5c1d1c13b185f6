"""The `bidrn` command line.

Each sub-command lives next to the code it drives and exposes ``add_parser(subparsers)``; this file only
collects them, so `bidrn --help` lists everything and importing one command never imports the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines ``add_parser(subparsers)`` which sets ``func``.
COMMAND_MODULES = [
    "bidrn.models.stats_cli",
    "bidrn.body.cli",
    "bidrn.train.cli",
    "bidrn.train.bench_methods",
    "bidrn.data.cli",
    "bidrn.render.cli",
    "mobile_export.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bidrn",
        description="BiDRN: binarized 3D whole-body human mesh recovery (SMPL-X).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        # Errors meant for people: print the message, not a traceback.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError's str() adds quotes
        print(f"bidrn {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
