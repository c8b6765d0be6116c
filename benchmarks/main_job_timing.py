"""Wall time of the README's main job (``rlhf-gym bench --agent retrieval --vs lead``) at this
checkout vs at an older commit (default 57aacd7, the last one before the MPNet gold judge), side
by side in one run on one machine, with cold embedding caches.

    python benchmarks/main_job_timing.py --out benchmarks/main_job_timing.json

Runs, one after the other, each a fresh process with a fresh ``$RLHF_GYM_CACHE``, ``$HF_HOME``
and ``$XDG_CACHE_HOME`` (the MPNet folder, assembled once beforehand and untimed, is linked in,
as the README's figure assumes "MPNet already unpacked"):

1. ``baseline``: the main job at the old commit (a ``git worktree`` of it on ``PYTHONPATH``, same
   venv). At 57aacd7 that is the v0 envs, MiniLM reward and judge.
2. ``current``: the main job at this checkout: the newest envs (v1: MiniLM proxy reward, MPNet
   gold judge), cold caches.
3. ``current-v0``: this checkout on the v0 envs, i.e. the very job the baseline ran (what the code
   change alone buys; its scores are compared with the baseline's).
4. ``current-warm``: run 2 again on its now filled disk cache (what a second run costs).

No thread limit reaches the runs (the README's ``make bench`` sets none): each uses torch's
default, every core here. Each run records wall seconds, the child's CPU seconds (user + system, less sensitive to other
load on a shared machine than wall time) and the load averages before and after. The JSON is
rewritten after every run; ``--resume`` skips runs already in it (same ``--work-dir``).
``--limit N`` makes a quick smoke test of the script itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
V0_ENVS = ["rlhf_gym/Dialogue-v0", "rlhf_gym/Summarization-v0", "rlhf_gym/Translation-v0"]


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def prepared_encoders() -> Path:
    """The user's assembled MPNet folder (assembled now if missing; not part of any timing)."""
    sys.path.insert(0, str(REPO))
    from rlhf_gym.rewards.gold import mpnet_dir

    return mpnet_dir().parent


def cache_env(work: Path, name: str, code: Path, encoders: Path, fresh: bool = True) -> dict[str, str]:
    """Environment of a run whose caches all live in ``work/cache-NAME`` (emptied first if
    ``fresh``; only the prepared MPNet folder is linked in)."""
    root = work / f"cache-{name}"
    if fresh:
        if root.exists():
            shutil.rmtree(root)
        (root / "rlhf_gym").mkdir(parents=True)
        (root / "rlhf_gym" / "encoders").symlink_to(encoders, target_is_directory=True)
        (root / "hf").mkdir()
    elif not root.is_dir():
        raise SystemExit(f"{root} is missing: the warm run reuses the cache the current run filled; run current first")
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(code), "RLHF_GYM_CACHE": str(root / "rlhf_gym"), "HF_HOME": str(root / "hf"),
                "XDG_CACHE_HOME": str(root), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.pop("RLHF_GYM_EMBED_CACHE", None)  # the default place: inside the fresh cache root
    # the README's `make bench` sets no thread limit: both runs use torch's default (every core)
    for name in THREAD_VARS:
        env.pop(name, None)
    return env


def run(name: str, code: Path, extra: list[str], env: dict[str, str], work: Path, limit: int | None) -> dict:
    out = work / f"{name}.json"
    out.unlink(missing_ok=True)
    shutil.rmtree(out.with_name(out.name + ".shards"), ignore_errors=True)  # bench would resume from them
    cmd = [sys.executable, "-m", "rlhf_gym.cli", "bench", "--agent", "retrieval", "--vs", "lead", "--out", str(out),
           *extra, *(["--limit", str(limit)] if limit else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = load()
    print(f"[{dt.datetime.now():%H:%M:%S}] {name}: {' '.join(cmd[1:])}  (load {load_before})", flush=True)
    start = time.perf_counter()
    with open(work / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    record = {"name": name, "code": str(code), "command": "rlhf-gym " + " ".join(cmd[3:]).replace(str(out), "OUT"),
              "returncode": proc.returncode, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
              "load_before": load_before, "load_after": load(), "log": str(work / f"{name}.log")}
    print(f"    -> rc {proc.returncode}, {wall:.1f} s wall, {cpu:.1f} s CPU (load {record['load_after']})", flush=True)
    if proc.returncode != 0:
        tail = (work / f"{name}.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"{name} failed (rc {proc.returncode}); end of its log:\n{tail}")
    results = json.loads(out.read_text())
    record["envs"] = {env_id: {"n": b["n"], "reward_mean": b["metrics"]["reward_mean"],
                               "win_rate_vs_reference": b["metrics"]["win_rate_vs_reference"]["mean"],
                               "win_rate_vs_agent": (b["metrics"]["win_rate_vs_agent"] or {}).get("mean"),
                               "judge": b["judge"]["name"]}
                      for env_id, b in results["envs"].items()}
    record["results_file"] = str(out)
    return record


def score_difference(a: Path, b: Path) -> dict:
    """Largest absolute difference of per-example reward, judge score and vs judge score."""
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    out = {}
    for env_id, block in ra["envs"].items():
        other = rb["envs"].get(env_id)
        if other is None:
            continue
        diff = {}
        for key in ("reward", "judge_score", "vs_judge_score"):
            xs = [g.get(key) for g in block["generations"]]
            ys = [g.get(key) for g in other["generations"]]
            if None in xs or None in ys or len(xs) != len(ys):
                continue
            diff[key] = max(abs(x - y) for x, y in zip(xs, ys))
        diff["same_predictions"] = ([g["prediction"] for g in block["generations"]]
                                    == [g["prediction"] for g in other["generations"]])
        out[env_id] = diff
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="57aacd7", help="commit to compare with (default 57aacd7)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "main_job_timing.json"))
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "rlhf_gym_main_job_timing"))
    parser.add_argument("--limit", type=int, default=None, help="first N test examples per env (smoke test)")
    parser.add_argument("--runs", default="baseline,current,current-v0,current-warm",
                        help="comma-separated subset of baseline,current,current-v0,current-warm")
    parser.add_argument("--resume", action="store_true", help="skip runs already in --out")
    args = parser.parse_args(argv)

    wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(wanted) - {"baseline", "current", "current-v0", "current-warm"}
    if unknown:
        parser.error(f"unknown runs: {', '.join(sorted(unknown))}")
    if "current-warm" in wanted and "current" not in wanted and not args.resume:
        parser.error("current-warm reuses the cache that the current run fills: run both")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out)
    head = git("rev-parse", "HEAD")
    baseline = git("rev-parse", args.baseline)
    report = {
        "what": "README main job (rlhf-gym bench --agent retrieval --vs lead), this checkout vs an older commit, "
                "cold embedding caches, one after the other on one machine",
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": head, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "baseline_commit": baseline, "limit": args.limit,
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "OMP_NUM_THREADS_of_this_script": os.environ.get("OMP_NUM_THREADS", "(unset)"),
                    "thread_limits_of_the_runs": "none (OMP/MKL/OPENBLAS_NUM_THREADS removed: torch's default)",
                    "pre_warmed": "the MPNet folder (a one-time install step) is assembled before, untimed, and "
                                  "linked into every run's fresh cache root; nothing else is shared"},
        "runs": {},
    }
    if args.resume and out_path.exists():
        previous = json.loads(out_path.read_text())
        if previous.get("commit") == head and previous.get("limit") == args.limit:
            report["runs"] = previous.get("runs", {})
    try:
        import torch

        report["machine"]["torch"] = torch.__version__
        probe = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
        clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
        report["machine"]["torch_threads_of_the_runs"] = int(subprocess.run(
            probe, env=clean, check=True, capture_output=True, text=True).stdout.strip())
    except ImportError:  # pragma: no cover
        pass

    encoders = prepared_encoders()
    tree = work / f"baseline-{baseline[:7]}"
    plan = {
        "baseline": (tree, []),
        "current": (REPO, []),
        "current-v0": (REPO, ["--envs", *V0_ENVS]),
        "current-warm": (REPO, []),
    }

    def save():
        runs = report["runs"]
        if "baseline" in runs and "current" in runs:
            report["speedup_current_vs_baseline"] = round(runs["baseline"]["wall_s"] / runs["current"]["wall_s"], 3)
            report["cpu_ratio_current_vs_baseline"] = round(runs["baseline"]["cpu_s"] / runs["current"]["cpu_s"], 3)
        if "baseline" in runs and "current-v0" in runs:
            report["speedup_same_v0_job"] = round(runs["baseline"]["wall_s"] / runs["current-v0"]["wall_s"], 3)
            report["cpu_ratio_same_v0_job"] = round(runs["baseline"]["cpu_s"] / runs["current-v0"]["cpu_s"], 3)
            report["score_difference_v0_baseline_vs_current"] = score_difference(
                Path(runs["baseline"]["results_file"]), Path(runs["current-v0"]["results_file"]))
        if "current" in runs and "current-warm" in runs:
            report["speedup_warm_vs_cold"] = round(runs["current"]["wall_s"] / runs["current-warm"]["wall_s"], 3)
            report["score_difference_cold_vs_warm"] = score_difference(
                Path(runs["current"]["results_file"]), Path(runs["current-warm"]["results_file"]))
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        os.replace(tmp, out_path)

    made_tree = False
    try:
        for name in wanted:
            if name in report["runs"]:
                print(f"{name}: already in {out_path}, skipped", flush=True)
                continue
            code, extra = plan[name]
            if name == "baseline" and not (tree / "rlhf_gym").is_dir():
                git("worktree", "add", "--detach", str(tree), baseline)
                made_tree = True
            if name == "current-warm":
                env = cache_env(work, "current", code, encoders, fresh=False)
            else:
                env = cache_env(work, name, code, encoders)
            record = run(name, code, extra, env, work, args.limit)
            report["runs"][name] = record
            save()
    finally:
        if made_tree:
            git("worktree", "remove", "--force", str(tree))
    save()
    for key in ("speedup_current_vs_baseline", "cpu_ratio_current_vs_baseline", "speedup_same_v0_job",
                "cpu_ratio_same_v0_job", "speedup_warm_vs_cold"):
        if key in report:
            print(f"{key}: {report[key]}")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
