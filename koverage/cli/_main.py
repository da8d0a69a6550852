"""Argument parsing and dispatch for `koverage <command>`."""

import argparse
import sys

from koverage.cli import _chat, _migrate, _status, _up


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="koverage",
        description="Koverage: is my AI healthy right now, and can I trust this model?",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (_up, _status, _migrate, _chat):
        module.register(commands)
    _register_eval(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        return 130


def _register_eval(commands) -> None:
    try:
        from koverage.cli import _eval
    except ImportError:  # the underwriter's dependencies are optional at import
        return
    _eval.register(commands)


if __name__ == "__main__":
    sys.exit(main())
