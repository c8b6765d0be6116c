"""TRL's GRPOTrainer on an rlhf-gym env: the env's reward as a TRL reward function (CPU, offline).

    pip install 'rlhf-gym[trl]'
    python examples/trl_grpo.py --steps 3 --log examples/trl_grpo_log.jsonl

The prompt dataset is ``rlhf-gym data --format trl`` (prompt + example_id, formatted as the
project's own trainers format them for the policy), the reward function
``rlhf_gym.integrations.trl.make_reward_func(env_id)`` -- the env's own step, so TRL trains on the
reward that ``bench`` reports. The policy defaults to the committed tiny GPT-2 SFT policy, which
makes a step take seconds on CPU; ``--policy smollm2`` trains SmolLM2-135M-Instruct instead (chat
prompts, much slower on CPU).

The log (JSON lines) holds the command, one record per optimizer step (TRL's own logged
metrics: reward, reward_std, completion lengths, loss...), and a ``reward_check`` record: every
completion the trainer scored is re-scored by resetting a separately made env on its example and
calling ``env.step``; ``max_abs_diff`` is the largest difference (0.0 means identical).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="rlhf_gym/Dialogue-v1")
    p.add_argument("--policy", default=str(ROOT / "baselines/sft/dialogue"),
                   help="smollm2, hf:PATH or a policy directory (default: the committed tiny dialogue SFT policy)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts", type=int, default=64, help="train prompts in the dataset")
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (the GRPO group)")
    p.add_argument("--batch-size", type=int, default=8, help="completions per step (prompts x generations)")
    p.add_argument("--max-completion-length", type=int, default=None, help="tokens (default: the task's)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient (TRL's default 0: no reference model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/trl_grpo")
    p.add_argument("--log", default=None, help="JSON-lines log (default: OUT/log.jsonl)")
    args = p.parse_args(argv)

    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as err:
        raise SystemExit(f"this example needs TRL: pip install 'rlhf-gym[trl]' ({err})")
    import gymnasium as gym
    import torch

    from rlhf_gym.integrations.trl import completion_text, make_reward_func, prompt_records
    from rlhf_gym.policy import resolve_policy
    from rlhf_gym.ppo.rollout import fit_action

    log_path = Path(args.log or Path(args.out) / "log.jsonl")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w", encoding="utf-8")

    def write(record: dict) -> None:
        log.write(json.dumps(record, ensure_ascii=False) + "\n")
        log.flush()

    started = time.monotonic()
    write({"kind": "command", "argv": ["python", "examples/trl_grpo.py", *(argv if argv is not None else sys.argv[1:])],
           "torch_threads": torch.get_num_threads()})
    torch.manual_seed(args.seed)
    model, tokenizer, meta = resolve_policy(args.policy, args.env)
    records = prompt_records(args.env, "train", limit=args.prompts, policy=args.policy,
                             conversational=meta.chat_template)
    dataset = Dataset.from_list(records)
    env_reward = make_reward_func(args.env)

    scored: list[tuple[str, str, float]] = []  # (example id, completion, reward) as the trainer saw them

    def reward_func(prompts, completions, **kwargs):
        rewards = env_reward(prompts=prompts, completions=completions, **kwargs)
        scored.extend(zip(kwargs["example_id"], (completion_text(c) for c in completions), rewards))
        return rewards

    reward_func.__name__ = env_reward.__name__

    class JsonLog(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_):
            if logs and "reward" in logs:
                write({"kind": "step", "step": state.global_step, "elapsed_s": round(time.monotonic() - started, 1),
                       **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})
                print(f"step {state.global_step}: reward {logs['reward']:.4f} (std {logs.get('reward_std', 0):.4f}), "
                      f"completion length {logs.get('completions/mean_length', float('nan')):.1f}", flush=True)

    config = GRPOConfig(
        output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length or meta.max_new_tokens,
        learning_rate=args.lr, beta=args.beta, temperature=1.0, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, bf16=False, seed=args.seed, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward_func, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[JsonLog()])
    trainer.train()
    train_s = time.monotonic() - started

    # Every reward the trainer used, recomputed the plain gymnasium way.
    env = gym.make(args.env)
    limit = env.unwrapped.task.max_response_chars
    diffs = []
    for example_id, text, reward in scored:
        env.reset(options={"example_id": example_id})
        diffs.append(abs(env.step(fit_action(text, limit))[1] - reward))
    write({"kind": "reward_check", "n": len(diffs), "max_abs_diff": max(diffs) if diffs else None,
           "examples": [{"example_id": i, "completion": t, "reward": r} for i, t, r in scored[:4]]})
    write({"kind": "done", "steps": args.steps, "completions_scored": len(scored), "wall_s": round(train_s, 1)})
    log.close()
    print(f"{args.steps} GRPO steps in {train_s:.0f} s; {len(scored)} completions scored, env.step re-check max |diff| "
          f"= {max(diffs) if diffs else None}; log: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
