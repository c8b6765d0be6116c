"""``rlhf-gym train {sft,ppo,rloo}`` and the bench agents ``sft:DIR``, ``ppo:DIR``, ``rloo:DIR``,
``bon:POLICY[,n=8]`` (POLICY: a policy directory, ``smollm2`` or ``hf:MODEL``).

Importing this module registers the agents with ``rlhf_gym.agents`` (when that module exists);
heavy imports (torch, transformers) happen inside the handlers and agent factories.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def _policy_agent(prefix: str):
    def factory(arg: str, task=None, device: str | None = None):
        from rlhf_gym.policy import PolicyAgent, parse_agent_arg

        path, kwargs = parse_agent_arg(arg)
        if device is not None:  # bench --device; a device=... in the spec wins
            kwargs.setdefault("device", device)
        if task is not None:
            kwargs.setdefault("env_id", task.env_id)  # used only when path is a spec, not a directory
            kwargs.setdefault("max_response_chars", task.max_response_chars)  # cut as the RL rollouts cut
        return PolicyAgent(path, name=f"{prefix}:{path}", **kwargs)

    return factory


def _bon_agent(arg: str, task=None, device: str | None = None):
    from rlhf_gym.best_of_n import BestOfNAgent
    from rlhf_gym.policy import parse_agent_arg

    path, kwargs = parse_agent_arg(arg)
    if device is not None:  # bench --device; a device=... in the spec wins
        kwargs.setdefault("device", device)
    if task is not None:
        kwargs.setdefault("env_id", task.env_id)  # prompts a spec (smollm2, hf:...) for this task
        kwargs.setdefault("max_response_chars", task.max_response_chars)
        if "reward" not in kwargs:
            # the bench's task supplies its training reward model (never its judge)
            kwargs["reward_model"] = task.reward_model()
    return BestOfNAgent(path, **kwargs)


def register_agents() -> None:
    try:
        from rlhf_gym.agents import register_agent
    except ImportError:  # the bench harness is not installed in this tree
        return
    for prefix in ("sft", "ppo", "rloo"):
        register_agent(prefix, _policy_agent(prefix), takes_device=True)
    register_agent("bon", _bon_agent, takes_device=True)


register_agents()


# ------------------------------------------------------------------------------ CLI


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                       presets: dict[str, dict] | None = None) -> None:
    """One ``--flag`` per dataclass field (underscores -> dashes), defaulting to None so that
    only flags the user typed override a preset. The help shows the value each preset gives a
    field (what a run actually uses), not only the dataclass default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f"(default {default}" if f.default is not dataclasses.MISSING else "("
        by_preset = [f"{name}: {values[f.name]}" for name, values in (presets or {}).items() if f.name in values]
        if by_preset:
            text += ("; " if f.default is not dataclasses.MISSING else "") + "; ".join(by_preset)
        text = (text + ")").replace("%", "%%") if text != "(" else None
        if base is bool:
            parser.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, type=base, help=text)


def _overrides(args, cls) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def _run_sft(args) -> int:
    from rlhf_gym.policy import SFTConfig, train_sft

    train_sft(SFTConfig(**_overrides(args, SFTConfig)))
    return 0


def auto_preset(preset: str, policy: str | None, env_id: str) -> str:
    """``auto``: ``gpu`` when CUDA is present, else ``cpu-smollm2`` when the policy is SmolLM2
    (named, or the task's default), else ``cpu-tiny``."""
    if preset != "auto":
        return preset
    import torch

    from rlhf_gym.policy import default_policy_spec

    if torch.cuda.is_available():
        return "gpu"
    spec = policy or default_policy_spec(env_id)
    return "cpu-smollm2" if spec == "smollm2" else "cpu-tiny"


def _run_rl(args, algo: str) -> int:
    from rlhf_gym.ppo.config import PPOConfig, make_config
    from rlhf_gym.ppo.trainer import train

    overrides = {k: v for k, v in _overrides(args, PPOConfig).items() if k not in ("algo", "preset")}
    cfg = make_config(auto_preset(args.preset, args.policy, args.env_id), algo=algo, **overrides)
    train(cfg)
    return 0


RL_COST = ("Cost, measured on 2 shared CPU cores (baselines/README.md): preset cpu-smollm2 (SmolLM2-135M with LoRA, "
           "the CPU default for dialogue and summarisation) took 2.5-8 minutes per iteration, 24 iterations by "
           "default, so 1-3 hours and 6.7-8.4 GB of memory; cpu-tiny (the committed tiny policies) 4-60 s per "
           "iteration, 30 iterations. --iterations bounds a run; --resume continues a killed one.")


def register(subparsers) -> None:
    from rlhf_gym.policy import SFTConfig

    train = subparsers.add_parser("train", help="train baseline policies: sft, ppo, rloo")
    sub = train.add_subparsers(dest="algo", required=True, metavar="ALGO")

    sft = sub.add_parser(
        "sft", help="supervised fine-tuning on an env's train split (resumes from OUT)",
        description="Supervised fine-tuning on an env's train split. Cost: the default schedule is 1,500 steps; "
                    "for the tiny policy on Dialogue one step took 0.9 s of CPU (about 25 minutes on an idle "
                    "core) and 7.5-8.3 s with the 2 cores shared with other jobs (about 3.5 hours). Bound it with "
                    "--max-steps or --time-limit-min; rerunning the same command resumes from OUT.")
    sft.add_argument("--env", dest="env_id", required=True, help="e.g. rlhf_gym/Translation-v0")
    sft.add_argument("--out", required=True)
    add_dataclass_args(sft, SFTConfig, skip=("env_id", "out"))
    sft.add_argument("--policy", dest="model", default=None,
                     help="the starting model, same as --model: tiny (default: a small GPT-2 from scratch), "
                          "smollm2 (SmolLM2-135M-Instruct, chat template; use a small --lr such as 2e-5), "
                          "hf:MODEL, or a model folder / hub id")
    sft.set_defaults(handler=_run_sft)

    # PPO's dataclass is imported lazily through a light module (no torch at import time).
    from rlhf_gym.ppo.config import PRESETS, PPOConfig

    for algo, text in (("ppo", "PPO with a value model and per-token KL penalty"),
                       ("rloo", "REINFORCE leave-one-out (k samples per prompt, no value model)")):
        p = sub.add_parser(algo, help=text, description=f"{text}. {RL_COST}")
        p.add_argument("--env", dest="env_id", required=True)
        p.add_argument("--policy", default=None,
                       help="the starting policy: an rlhf-gym policy directory (from `train sft`), smollm2 "
                            "(SmolLM2-135M-Instruct) or hf:MODEL. Default: the task's default policy, smollm2 for "
                            "dialogue and summarization, baselines/sft/translation for translation")
        p.add_argument("--out", required=True)
        p.add_argument("--preset", default="auto", choices=["auto", *sorted(PRESETS)],
                       help="hyper-parameter preset (default auto: gpu when CUDA is present, cpu-smollm2 for "
                            "SmolLM2 on CPU, else cpu-tiny); flags you give override it")
        add_dataclass_args(p, PPOConfig, skip=("env_id", "policy", "out", "algo", "preset"), presets=PRESETS)
        p.set_defaults(handler=lambda a, algo=algo: _run_rl(a, algo))
