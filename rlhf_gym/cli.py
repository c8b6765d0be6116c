"""The ``rlhf-gym`` command line.

Each feature area owns one module that exposes ``register(subparsers)``; this file only
wires them together, so optional areas (PPO, leaderboard server) keep their heavy imports
inside their own command handlers.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMAND_MODULES = [
    "rlhf_gym.commands",
    "rlhf_gym.rewards.train",
    "rlhf_gym.baselines_cli",
    "rlhf_gym.leaderboard.cli",
    "rlhf_gym.loop",
    "rlhf_gym.remote.server",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf-gym",
        description="Gymnasium environments and a benchmark suite for RLHF on text generation.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError) as err:
        # User errors (bad file, unknown id...) get one clear line, not a traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"rlhf-gym {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
