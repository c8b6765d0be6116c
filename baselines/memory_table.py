"""Accuracy-by-distance table (markdown) and PNG from DialogueMemory (v0 or v1) bench results.

    python baselines/memory_table.py baselines/memory/*.json --png baselines/memory/accuracy_by_distance.png

Every number is read from the results files `rlhf-gym bench` wrote (and their Wilson CIs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlhf_gym.memory.plan import DISTANCE_BUCKETS
from rlhf_gym.metrics import format_rate

ENVS = ("rlhf_gym/DialogueMemory-v1", "rlhf_gym/DialogueMemory-v0")  # the first one a file holds is read


def cell(rate: dict) -> str:
    if not rate or not rate.get("n"):
        return "-"
    return format_rate(rate, digits=2)  # interval rounded outwards: the mean is always inside it


def load(paths: list[str]) -> list[tuple[str, dict]]:
    rows = []
    for path in paths:
        if path.endswith(".partial"):
            continue
        results = json.loads(Path(path).read_text(encoding="utf-8"))
        env = next((e for e in ENVS if e in results.get("envs", {})), None)
        if env is None:
            raise ValueError(f"{path} has no DialogueMemory block ({' or '.join(ENVS)})")
        rows.append((results["agent"]["spec"], results["envs"][env]))
    if len({block["env_id"] for _, block in rows}) > 1:
        raise ValueError("the files mix DialogueMemory versions (memory rules); table one version at a time")
    order = ["reference", "lead", "smollm2", "smollm2-full", "smollm2-window", "smollm2-memory"]
    return sorted(rows, key=lambda r: (order.index(r[0]) if r[0] in order else len(order), r[0]))


def markdown(rows: list[tuple[str, dict]]) -> str:
    buckets = [label for label, _, _ in DISTANCE_BUCKETS]
    head = ["agent", "episodes", "probes", "memory acc"] + [f"d={b}" for b in buckets]
    head += ["updated", "not updated", "RM score, non-probe", "words"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec, block in rows:
        m = block["metrics"]
        s = m["score_non_probe"]
        lines.append("| " + " | ".join(
            [spec, str(block["n"]), str(block["n_probes"]), cell(m["memory_accuracy"])]
            + [cell(m["memory_by_distance"][b]) for b in buckets]
            + [cell(m["memory_by_update"]["updated"]), cell(m["memory_by_update"]["not_updated"]),
               format_rate(s, digits=2), f"{m['length']['mean_words']:.1f}"]) + " |")
    return "\n".join(lines)


def plot(rows: list[tuple[str, dict]], out: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("the PNG needs matplotlib: pip install 'rlhf-gym[plot]'") from err
    buckets = [label for label, _, _ in DISTANCE_BUCKETS]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k, (spec, block) in enumerate(rows):
        rates = [block["metrics"]["memory_by_distance"][b] for b in buckets]
        x = [i + (k - (len(rows) - 1) / 2) * 0.06 for i in range(len(buckets))]
        y = [r["mean"] for r in rates]
        # clipped at 0: a Wilson bound can sit a rounding error inside the rate (0.9999999999 vs 1.0)
        err = [[max(0.0, r["mean"] - r["ci_low"]) for r in rates], [max(0.0, r["ci_high"] - r["mean"]) for r in rates]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=spec)
    ax.set_xticks(range(len(buckets)), [f"{b} turns" for b in buckets])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("distance from the (latest) statement of the fact to its probe")
    ax.set_ylabel("memory accuracy (95% Wilson CI)")
    n = rows[0][1]["n"] if rows else 0
    version = rows[0][1]["env_id"].split("/")[-1] if rows else "DialogueMemory"
    split = rows[0][1]["split"] if rows else ""
    ax.set_title(f"{version}, {split} split, first {n} episodes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--png", default=None)
    args = parser.parse_args()
    rows = load(args.results)
    print(markdown(rows))
    if args.png:
        plot(rows, args.png)
        print(f"wrote {args.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
