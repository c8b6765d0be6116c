"""Collect the `gpu` preset timing runs (full-parameter and LoRA) into one JSON.

    python baselines/gpu_timing.py --full runs/gpu_full --lora runs/gpu_lora --out baselines/smollm2/gpu/gpu_preset_timing.json
"""

import argparse
import json
import platform
from pathlib import Path

KEYS = ("iteration", "tokens_per_second", "samples_per_second", "time_rollout", "time_update", "time_iteration",
        "peak_memory_mb", "response_length")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", required=True)
    ap.add_argument("--lora", required=True)
    ap.add_argument("--device", default=None, help="what ran it (default: torch.cuda.get_device_name)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    device = args.device
    if device is None:
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
    out = {"device": device,
           "note": "iteration 1 includes CUDA/cuBLAS warm-up; the last iteration is the steady-state figure. "
                   "peak_memory_mb is torch.cuda.max_memory_allocated.", "runs": {}}
    for mode, run in (("full", Path(args.full)), ("lora", Path(args.lora))):
        cfg = json.loads((run / "ppo_config.json").read_text())
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        out["runs"][mode] = {**{k: cfg[k] for k in ("batch_size", "mini_batch_size", "ppo_epochs", "lora_r", "dtype",
                                                    "reward")},
                             "iterations": [{k: r[k] for k in KEYS} for r in rows]}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
