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
    "rlhf_gym.rewards.audit",
    "rlhf_gym.overopt",
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
    # Read by main() wherever it appears on the line (before or after COMMAND); declared here for --help.
    parser.add_argument("--task-file", action="append", metavar="SPEC", default=[],
                        help="register a task from a JSONL/Parquet file for this command (repeatable; any "
                             "position): PATH,kind=dialogue|translation|summarization[,name=NAME][,version=N]"
                             "[,max_response_chars=N] -> rlhf_gym/NAME-vN (NAME: the file's stem). Records "
                             "{id, prompt, references[, split]}; without split fields 5%% are test and 5%% "
                             "validation (at least one each) by a hash of the id")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def pop_task_files(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the ``--task-file`` specs, the other arguments): the option may follow the command, so
    ``rlhf-gym bench --task-file qa.jsonl,kind=dialogue --envs rlhf_gym/qa-v0`` works."""
    specs, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg == "--task-file":
            if i + 1 >= len(argv):
                raise ValueError("--task-file needs a value: PATH,kind=dialogue|translation|summarization")
            specs.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--task-file="):
            specs.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return specs, rest


def register_task_files(specs: list[str]) -> None:
    """Register each task and export the specs, so child processes register them too."""
    import os

    from rlhf_gym.tasks import TASK_FILES_ENV, register_task_file

    for spec in specs:
        task = register_task_file(spec)
        print(f"registered {task.env_id} from {task.source}", file=sys.stderr)
    known = [s for s in os.environ.get(TASK_FILES_ENV, "").split(os.pathsep) if s]
    os.environ[TASK_FILES_ENV] = os.pathsep.join(known + [s for s in specs if s not in known])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        task_files, argv = pop_task_files(list(sys.argv[1:] if argv is None else argv))
    except ValueError as err:
        parser.error(str(err))
    args = parser.parse_args(argv)
    try:
        register_task_files(task_files)
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
