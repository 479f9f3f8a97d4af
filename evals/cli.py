"""The shared shape of the ``python -m evals.*`` command lines.

Contract:
- `generation_args(parser, think_tokens)` adds the served backend's generation budgets every
  command that answers items takes: ``--backend``, ``--direct-tokens``, ``--think-tokens``,
  ``--answer-tokens``.
- `log(msg)`: a progress line on stderr, flushed (stdout keeps the command's result).
- `dispatch(parser, commands, argv)` parses `argv` (subcommand in ``cmd``), checks ``--n`` ≥ 1 where
  the command has it, runs ``commands[cmd](ns)`` offline (``HF_HUB_OFFLINE=1``), and turns bad input
  (ValueError, LookupError, FileNotFoundError) into a one-line ``error: …`` and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable


def log(msg: str) -> None:
    """Write one progress line to stderr, flushed."""
    print(msg, file=sys.stderr, flush=True)


def generation_args(parser: argparse.ArgumentParser, think_tokens: int) -> None:
    """Add the generation budgets (tokens) of a command that answers items on the served backend."""
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--direct-tokens", type=int, default=32, help="most tokens of an answer given at once")
    parser.add_argument("--think-tokens", type=int, default=think_tokens, help="most reasoning tokens")
    parser.add_argument("--answer-tokens", type=int, default=32, help="most tokens of the answer after reasoning")


def dispatch(parser: argparse.ArgumentParser, commands: dict[str, Callable], argv: list[str] | None = None):
    """Parse `argv` and run its subcommand (module contract); returns what the command returns.

    Raises:
        SystemExit: 2 on bad input, with a one-line message on stderr.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ns = parser.parse_args(argv)
    if getattr(ns, "n", 1) < 1:
        parser.error(f"--n must be >= 1, got {ns.n}")
    try:
        return commands[ns.cmd](ns)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
