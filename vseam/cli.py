"""The umbrella command `vseam`. Each home registers its own subcommands; this file only wires them up.

Subcommand modules are imported lazily-by-name so that `vseam profile ...` does not import torch or vLLM.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: (module, description) of every home that contributes subcommands via `register(subparsers)`
COMMAND_MODULES = [
    "vseam.head_profiles.cli",  # vseam profile ...
    "vseam.toy_cli",  # vseam toy-model
    "vseam.calibrate.cli",  # vseam calibrate / vseam edit
    "vseam.serve.cli",  # vseam serve
    "vseam.benchmarks.cli",  # vseam eval
]


def build_parser() -> argparse.ArgumentParser:
    from vseam import __version__

    parser = argparse.ArgumentParser(prog="vseam", description="V-SEAM head profiles: calibrate, serve, evaluate")
    parser.add_argument("--version", action="version", version=f"vseam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `vseam serve` hands unknown flags to vLLM, so it parses its own argv
    if argv[:1] == ["serve"]:
        from vseam.serve.cli import main as serve_main

        return serve_main(argv[1:])
    from vseam.core.errors import run_command

    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
