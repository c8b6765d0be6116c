"""Data-parallel PPO (``accelerate launch``, N processes) against one process, same global batch.

    python benchmarks/bench_ppo_data_parallel.py --num-processes 2 --out benchmarks/ppo_data_parallel.json

Both runs sample with ``--sampling-rng per-sample``, so they roll out the same responses; the
JSON records, per metric, the largest relative difference between the two runs over all
iterations, the largest weight difference of the trained policies, and the wall times. On a
machine without GPUs the ranks use gloo on CPU (``--multi_gpu`` only selects accelerate's
multi-process launcher).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="ppo", choices=["ppo", "rloo"])
    parser.add_argument("--env", default="rlhf_gym/Translation-v1")
    parser.add_argument("--policy", default="baselines/sft/translation")
    parser.add_argument("--reward", default="chrf")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mini-batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/ppo_data_parallel.json")
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file

    from rlhf_gym.ppo.trainer import TIMING_KEYS

    tmp = Path(tempfile.mkdtemp(prefix="ppo_dp_"))
    train = ["-m", "rlhf_gym.cli", "train", args.algo, "--env", args.env, "--policy", args.policy,
             "--preset", "cpu-tiny", "--reward", args.reward, "--iterations", str(args.iterations),
             "--batch-size", str(args.batch_size), "--mini-batch-size", str(args.mini_batch_size),
             "--ppo-epochs", "2", "--max-new-tokens", str(args.max_new_tokens), "--sampling-rng", "per-sample",
             "--no-progress", "--no-plot"]
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(args.num_processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    commands = {"single": train + ["--out", str(tmp / "single")],
                "data_parallel": launch + train + ["--out", str(tmp / "data_parallel")]}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    seconds = {}
    load_before = os.getloadavg()
    for name, cmd in commands.items():
        start = time.perf_counter()
        subprocess.run([sys.executable, *cmd], check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        seconds[name] = round(time.perf_counter() - start, 1)
    load_after = os.getloadavg()

    read = lambda name, file: [json.loads(x) for x in (tmp / name / file).read_text().splitlines()]  # noqa: E731
    single, dp = read("single", "metrics.jsonl"), read("data_parallel", "metrics.jsonl")
    max_rel = {}
    for a, b in zip(single, dp):
        for key, value in a.items():
            if key in TIMING_KEYS or not isinstance(value, (int, float)) or value != value:
                continue
            rel = abs(b[key] - value) / max(abs(value), 1e-12)
            max_rel[key] = max(max_rel.get(key, 0.0), rel)
    w1, w2 = (load_file(tmp / name / "model.safetensors") for name in ("single", "data_parallel"))
    report = {
        "what": f"{args.algo.upper()}: {args.num_processes} processes (accelerate launch, DDP) vs 1 process, "
                "same global batch and per-sample sampling",
        "commands": {name: " ".join(["python", *cmd]).replace(str(tmp) + "/", "") for name, cmd in commands.items()},
        "wall_seconds": seconds,
        "iterations": len(single),
        "same_samples": read("single", "samples.jsonl") == read("data_parallel", "samples.jsonl"),
        "same_reward_mean": [m["reward_mean"] for m in single] == [m["reward_mean"] for m in dp],
        "max_relative_difference": {k: float(f"{v:.3g}") for k, v in sorted(max_rel.items())},
        "max_abs_weight_difference": float(max((w1[k] - w2[k]).abs().max() for k in w1)),
        "world_size_in_config": [json.loads((tmp / n / "ppo_config.json").read_text())["world_size"]
                                 for n in ("single", "data_parallel")],
        "single_process_metrics": single,
        "machine": {"cpus_visible": os.cpu_count(), "torch": torch.__version__,
                    "backend": "gloo" if not torch.cuda.is_available() else "nccl",
                    "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
                    "note": "2 CPU cores shared with other jobs: wall times vary with the load"},
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("wall_seconds", "same_samples", "max_abs_weight_difference")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
