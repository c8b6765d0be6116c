"""``bench --executor ray`` against the single-process bench on the same config, side by side.

    python benchmarks/bench_ray_executor.py --agent retrieval --vs lead --limit 50 --num-cpus 2 \
        --out benchmarks/ray_bench.json

Runs the two CLI commands one after the other (each a fresh process, so Ray's start-up and every
worker's model loading are counted), checks that the two results files hold the same env blocks
(metrics and per-example generations; only ``created`` may differ) and writes the wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="retrieval")
    parser.add_argument("--vs", default="lead")
    parser.add_argument("--envs", nargs="+", default=None, help="default: the newest version of every task")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/ray_bench.json")
    args = parser.parse_args()

    from rlhf_gym.evaluation import SHARD_SIZE, list_env_ids

    envs = args.envs or list_env_ids()
    tmp = Path(tempfile.mkdtemp(prefix="ray_bench_"))
    base = [sys.executable, "-m", "rlhf_gym.cli", "bench", "--agent", args.agent, "--envs", *envs,
            "--limit", str(args.limit), "--shard-size", str(args.shard_size or SHARD_SIZE)]
    base += ["--vs", args.vs] if args.vs else []
    commands = {"local": base + ["--out", str(tmp / "local.json")],
                "ray": base + ["--executor", "ray", "--num-cpus", str(args.num_cpus), "--out", str(tmp / "ray.json")]}
    load_before = os.getloadavg()
    seconds = {name: timed(cmd) for name, cmd in commands.items()}
    load_after = os.getloadavg()
    local, ray = (json.loads((tmp / f"{name}.json").read_text()) for name in ("local", "ray"))
    report = {
        "what": "rlhf-gym bench, single process vs --executor ray (local Ray cluster), same config",
        "commands": {name: " ".join(["rlhf-gym", *cmd[3:]]).replace(str(tmp) + "/", "")
                     for name, cmd in commands.items()},
        "wall_seconds": {name: round(value, 1) for name, value in seconds.items()},
        "identical_env_blocks": local["envs"] == ray["envs"],
        "identical_metrics": {env: local["envs"][env]["metrics"] == ray["envs"][env]["metrics"] for env in envs},
        "metrics": {env: {k: local["envs"][env]["metrics"][k] for k in ("bleu", "chrf", "rougeL", "reward_mean",
                                                                        "judge_mean", "win_rate_vs_reference",
                                                                        "win_rate_vs_agent")}
                    for env in envs},
        "n": {env: local["envs"][env]["n"] for env in envs},
        "machine": {"cpus_visible": os.cpu_count(), "ray_num_cpus": args.num_cpus, "python": platform.python_version(),
                    "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
                    "note": "2 CPU cores shared with other jobs: wall times vary with the load"},
        "packages": local["packages"] | {"ray": _version("ray")},
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("wall_seconds", "identical_env_blocks")}, indent=1))
    print(f"wrote {args.out}")
    return 0 if report["identical_env_blocks"] else 1


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
