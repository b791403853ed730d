"""The umbrella command `vseam`. Each home registers its own subcommands; this file only wires them up.

Subcommand modules are imported lazily-by-name so that `vseam profile ...` does not import torch or vLLM.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: (module, description) of every home that contributes subcommands via `register(subparsers)`
COMMAND_MODULES = [
    "head_profiles.cli",  # vseam profile ...
    "vseam.toy_cli",  # vseam toy-model
    "calibrate.cli",  # vseam calibrate / vseam edit
    "serve.cli",  # vseam serve
    "benchmarks.cli",  # vseam eval
]


def build_parser() -> argparse.ArgumentParser:
    from vseam import __version__

    parser = argparse.ArgumentParser(prog="vseam", description="V-SEAM head profiles: calibrate, serve, evaluate")
    parser.add_argument("--version", action="version", version=f"vseam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # home not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `vseam serve` hands unknown flags to vLLM, so it parses its own argv
    if argv[:1] == ["serve"]:
        from serve.cli import main as serve_main

        return serve_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    return run(args.func, args)


def run(func, args) -> int:
    """Run a subcommand; user errors print one clear line (naming file/field) and exit 1, no traceback."""
    from vseam.errors import USER_ERRORS

    try:
        return int(func(args) or 0)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
