"""Throughput of one PPO/RLOO iteration: rlhf-gym's native trainer vs TRL's GRPO/RLOO trainers,
on the same tiny GPT-2, the same prompts and the same rule-based reward, in the same process.

    python benchmarks/bench_ppo_throughput.py --iterations 3 --batch-size 16 --max-new-tokens 32

TRL is a benchmark-only dependency (``pip install trl``); without it only the native numbers are
printed. Reported: responses (samples) per second and generated tokens per second, over whole
iterations (generation + scoring + forward passes + updates), excluding the first (warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def non_ascii_fraction(prompt, response):
    return sum(ord(c) > 127 for c in response) / max(1, len(response))


def make_setup(tmp: Path, n_layer: int, n_embd: int, max_new_tokens: int):
    import torch

    from rlhf_gym.data import Example
    from rlhf_gym.policy import PolicyMeta, build_tiny_policy, save_policy
    from rlhf_gym.tokenizer import load_tokenizer

    tok = load_tokenizer()
    model = build_tiny_policy(tok, n_layer=n_layer, n_embd=n_embd, n_head=4, n_positions=256, seed=0)
    meta = PolicyMeta(env_id="rlhf_gym/Translation-v0", kind="translation", arch="causal", max_prompt_len=64,
                      max_new_tokens=max_new_tokens)
    path = save_policy(model, tok, meta, tmp / "policy")
    examples = [Example(id=str(i), prompt=f"Write item number {i} of the list:", references=("x",))
                for i in range(256)]
    torch.manual_seed(0)
    return path, examples


def bench_native(policy, examples, args, algo: str) -> dict:
    from rlhf_gym.ppo.config import make_config
    from rlhf_gym.ppo.trainer import train
    from rlhf_gym.rewards.base import CallableReward

    with tempfile.TemporaryDirectory() as out:
        cfg = make_config("cpu-tiny", algo=algo, policy=str(policy), out=out, iterations=args.iterations + 1,
                          batch_size=args.batch_size, mini_batch_size=args.batch_size, ppo_epochs=1,  # one optimiser step, as TRL
                          max_new_tokens=args.max_new_tokens, rloo_k=args.k, progress=False, plot=False,
                          save_every=10**6, missing_eos_penalty=0.0, threads=args.threads)
        history = train(cfg, reward_model=CallableReward(non_ascii_fraction), examples=examples)
    timed = history[1:]  # the first iteration pays one-off costs
    secs = sum(h["time_iteration"] for h in timed)
    toks = sum(h["tokens_per_second"] * h["time_iteration"] for h in timed)
    return {"trainer": f"rlhf-gym {algo}", "samples_per_second": args.batch_size * len(timed) / secs,
            "tokens_per_second": toks / secs, "seconds_per_iteration": secs / len(timed)}


def bench_trl(policy, examples, args, which: str) -> dict | None:
    try:
        import trl
        from datasets import Dataset
    except ImportError:
        print("trl not installed: skipping the TRL comparison (pip install trl)", file=sys.stderr)
        return None
    from transformers import AutoModelForCausalLM

    from rlhf_gym.tokenizer import load_tokenizer

    tok = load_tokenizer(str(policy))
    model = AutoModelForCausalLM.from_pretrained(str(policy))
    prompts = [e.prompt + "\n" for e in examples]
    dataset = Dataset.from_dict({"prompt": prompts})

    def reward(prompts, completions, **kwargs):
        return [non_ascii_fraction(p, c) for p, c in zip(prompts, completions)]

    n_steps = args.iterations + 1
    with tempfile.TemporaryDirectory() as out:
        common = dict(output_dir=out, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                      max_steps=n_steps, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no",
                      num_generations=args.k, max_completion_length=args.max_new_tokens, temperature=1.0,
                      learning_rate=1e-4, seed=0, dataloader_num_workers=0)
        if which == "grpo":
            conf, cls = trl.GRPOConfig(**common, beta=0.05), trl.GRPOTrainer
        else:
            conf, cls = trl.RLOOConfig(**common, beta=0.05), trl.RLOOTrainer
        trainer = cls(model=model, reward_funcs=[reward], args=conf, train_dataset=dataset, processing_class=tok)
        step_times: list[float] = []
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            def on_step_begin(self, *a, **k):
                self.t = time.perf_counter()

            def on_step_end(self, *a, **k):
                step_times.append(time.perf_counter() - self.t)

        trainer.add_callback(Timer())
        trainer.train()
        lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    timed = step_times[1:]
    secs = sum(timed)
    # per_device_train_batch_size counts completions (prompts x num_generations) in TRL >= 0.16
    samples = args.batch_size * len(timed)
    mean_len = sum(lengths[1:]) / max(1, len(lengths[1:])) if lengths else float("nan")
    return {"trainer": f"trl {which} {trl.__version__}", "samples_per_second": samples / secs,
            "tokens_per_second": samples * mean_len / secs, "seconds_per_iteration": secs / len(timed)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=16, help="responses per iteration")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt (RLOO/GRPO)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--trl", nargs="*", default=["rloo", "grpo"], help="TRL trainers to compare (none: skip)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best is reported")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        policy, examples = make_setup(Path(tmp), args.n_layer, args.n_embd, args.max_new_tokens)
        # Interleaved rounds, best round kept: on a shared machine the load changes from minute
        # to minute, and running each trainer back to back would bias whichever ran in a quiet spell.
        for _ in range(args.rounds):
            jobs = [lambda a=a: bench_native(policy, examples, args, a) for a in ("ppo", "rloo")]
            jobs += [lambda w=w: bench_trl(policy, examples, args, w) for w in args.trl]
            for job in jobs:
                row = job()
                if row:
                    runs.setdefault(row["trainer"], []).append(row)
                    print(json.dumps(row), flush=True)
    rows = [max(r, key=lambda x: x["samples_per_second"]) for r in runs.values()]
    print(f"\nbest of {args.rounds} interleaved round(s)")
    print(f"\n{'trainer':28s} {'samples/s':>10s} {'tokens/s':>10s} {'s/iter':>8s}")
    for r in rows:
        print(f"{r['trainer']:28s} {r['samples_per_second']:10.2f} {r['tokens_per_second']:10.1f} "
              f"{r['seconds_per_iteration']:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
