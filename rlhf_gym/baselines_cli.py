"""``rlhf-gym train {sft,ppo,rloo}`` and the bench agents ``sft:DIR``, ``ppo:DIR``, ``rloo:DIR``,
``bon:DIR[,n=8]``.

Importing this module registers the agents with ``rlhf_gym.agents`` (when that module exists);
heavy imports (torch, transformers) happen inside the handlers and agent factories.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def _policy_agent(prefix: str):
    def factory(arg: str, task=None):
        from rlhf_gym.policy import PolicyAgent, parse_agent_arg

        path, kwargs = parse_agent_arg(arg)
        return PolicyAgent(path, name=f"{prefix}:{path}", **kwargs)

    return factory


def _bon_agent(arg: str, task=None):
    from rlhf_gym.best_of_n import BestOfNAgent
    from rlhf_gym.policy import parse_agent_arg

    path, kwargs = parse_agent_arg(arg)
    if task is not None and "reward" not in kwargs:
        # the bench's task supplies its training reward model (never its judge)
        kwargs["reward_model"] = task.reward_model()
    return BestOfNAgent(path, **kwargs)


def register_agents() -> None:
    try:
        from rlhf_gym.agents import register_agent
    except ImportError:  # the bench harness is not installed in this tree
        return
    for prefix in ("sft", "ppo", "rloo"):
        register_agent(prefix, _policy_agent(prefix))
    register_agent("bon", _bon_agent)


register_agents()


# ------------------------------------------------------------------------------ CLI


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per dataclass field (underscores -> dashes), defaulting to None so that
    only flags the user typed override a preset."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        if base is bool:
            parser.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                                help=f"(default {f.default})")
        else:
            parser.add_argument(flag, dest=f.name, default=None, type=base,
                                help=f"(default {f.default})" if f.default is not dataclasses.MISSING else None)


def _overrides(args, cls) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def _run_sft(args) -> int:
    from rlhf_gym.policy import SFTConfig, train_sft

    train_sft(SFTConfig(**_overrides(args, SFTConfig)))
    return 0


def _run_rl(args, algo: str) -> int:
    from rlhf_gym.ppo.config import PPOConfig, make_config
    from rlhf_gym.ppo.trainer import train

    overrides = {k: v for k, v in _overrides(args, PPOConfig).items() if k not in ("algo", "preset")}
    cfg = make_config(args.preset, algo=algo, **overrides)
    train(cfg)
    return 0


def register(subparsers) -> None:
    from rlhf_gym.policy import SFTConfig

    train = subparsers.add_parser("train", help="train baseline policies: sft, ppo, rloo")
    sub = train.add_subparsers(dest="algo", required=True, metavar="ALGO")

    sft = sub.add_parser("sft", help="supervised fine-tuning on an env's train split (resumes from OUT)")
    sft.add_argument("--env", dest="env_id", required=True, help="e.g. rlhf_gym/Translation-v0")
    sft.add_argument("--out", required=True)
    add_dataclass_args(sft, SFTConfig, skip=("env_id", "out"))
    sft.set_defaults(handler=_run_sft)

    # PPO's dataclass is imported lazily through a light module (no torch at import time).
    from rlhf_gym.ppo.config import PRESETS, PPOConfig

    for algo, text in (("ppo", "PPO with a value model and per-token KL penalty"),
                       ("rloo", "REINFORCE leave-one-out (k samples per prompt, no value model)")):
        p = sub.add_parser(algo, help=text)
        p.add_argument("--env", dest="env_id", required=True)
        p.add_argument("--policy", required=True, help="an rlhf-gym policy directory (from `train sft`)")
        p.add_argument("--out", required=True)
        p.add_argument("--preset", default="cpu-tiny", choices=sorted(PRESETS))
        add_dataclass_args(p, PPOConfig, skip=("env_id", "policy", "out", "algo", "preset"))
        p.set_defaults(handler=lambda a, algo=algo: _run_rl(a, algo))
