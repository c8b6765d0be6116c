"""Re-score recorded DialogueMemory-v0 bench files under the v1 memory rule, without generating.

    python baselines/memory_rescore.py baselines/memory/n16/*.json baselines/memory/rl/test_*.json \\
        baselines/memory/rl/val_*.json --out-dir baselines/memory/v1

Each file's recorded replies (``generations``: one record per agent turn, with the episode id, turn
and prediction) are replayed through ``rlhf_gym/DialogueMemory-v1``: the same episodes (the first
``n`` of the file's split, as ``bench --limit n`` played them), each recorded reply stepped in turn,
so every probe is scored by the env's own v1 rule and every turn by the env's reward model again.
The replay is checked against the file: the same episode ids and turns, the v0 rule's verdict
(``memory_correct_v0`` in the v1 env's info) equal to the recorded ``memory_correct`` at every
probe, and the recomputed reward-model score within 1e-3 of the recorded one (the count of turns
outside it is reported, not hidden).

Writes, per input, ``OUT_DIR/<parent>/<name>`` (a bench results file with a DialogueMemory-v1 block,
so ``memory_rl_compare.py`` and ``memory_table.py`` read it) and ``OUT_DIR/rescore.json`` (v0 vs v1
accuracy with 95% Wilson CIs, the probes v1 turned from 1 to 0 and which other values they named).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

V0 = "rlhf_gym/DialogueMemory-v0"
V1 = "rlhf_gym/DialogueMemory-v1"
SCORE_TOLERANCE = 1e-3


class ReplayAgent:
    """Answers each (episode id, turn) with the reply recorded for it; a turn not in the file is an error."""

    def __init__(self, name: str, records: list[dict[str, Any]]):
        self.name = f"replay:{name}"
        self.replies = {(r["id"], int(r["turn"])): r["prediction"] for r in records}

    def act(self, observations: Sequence[str], infos: Sequence[dict[str, Any]]) -> list[str]:
        out = []
        for info in infos:
            key = (info["example_id"], int(info["turn"]))
            if key not in self.replies:
                raise ValueError(f"{self.name}: no recorded reply for episode {key[0]} turn {key[1]}; "
                                 "the file's episodes are not the first n of its split")
            out.append(self.replies[key])
        return out


def rescore_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the results file re-scored as v1, a summary of the change)."""
    from rlhf_gym.memory.bench import block_from_records, play_episodes
    from rlhf_gym.metrics import rate_with_ci

    results = json.loads(path.read_text(encoding="utf-8"))
    if V0 not in results.get("envs", {}):
        raise ValueError(f"{path}: no {V0} block to re-score")
    old = results["envs"][V0]
    if old.get("safety_coef"):
        raise ValueError(f"{path}: benched with a safety penalty; this script replays with the plain reward")
    agent = ReplayAgent(results["agent"]["spec"], old["generations"])
    records, reward_model = play_episodes(agent, old["split"], old["n"], reward=old.get("reward_spec") or "builtin",
                                          show_progress=False, version=1)
    recorded = {(r["id"], int(r["turn"])): r for r in old["generations"]}
    replayed = {(r["id"], r["turn"]): r for r in records}
    if set(recorded) != set(replayed):
        raise ValueError(f"{path}: the replay played other turns than the file holds "
                         f"({len(set(recorded) ^ set(replayed))} differ)")
    v0_mismatch = [k for k, r in replayed.items() if r["is_probe"]
                   and r["memory_correct_v0"] != recorded[k]["memory_correct"]]
    if v0_mismatch:
        raise ValueError(f"{path}: the v0 rule on replay disagrees with the file at {v0_mismatch[:5]}")
    score_off = [k for k in replayed if abs(replayed[k]["score"] - recorded[k]["score"]) > SCORE_TOLERANCE]
    block = block_from_records(records, 1, split=old["split"], limit=old.get("limit"), reward_model=reward_model)
    block["reward_spec"] = old.get("reward_spec") or "builtin"
    block["rescored_from"] = str(path)
    new_results = {**results, "envs": {V1: block}}
    probes = [r for r in records if r["is_probe"]]
    flipped = [{"id": r["id"], "turn": r["turn"], "slot": r["slot"], "answer": r["answer"],
                "other_values_named": r["other_values_named"], "prediction": r["prediction"]}
               for r in probes if r["memory_correct_v0"] == 1.0 and r["memory_correct"] == 0.0]
    summary = {"file": str(path), "agent": results["agent"]["spec"], "split": old["split"], "n_episodes": old["n"],
               "n_probes": len(probes),
               "memory_accuracy_v0": rate_with_ci([r["memory_correct_v0"] == 1.0 for r in probes]),
               "memory_accuracy_v1": rate_with_ci([r["memory_correct"] == 1.0 for r in probes]),
               "n_v0_correct_zero_under_v1": len(flipped), "n_turns_score_off": len(score_off),
               "max_score_diff": max(abs(replayed[k]["score"] - recorded[k]["score"]) for k in replayed),
               "flipped": flipped}
    return new_results, summary


def markdown(summaries: list[dict[str, Any]]) -> str:
    from rlhf_gym.metrics import format_rate

    lines = [("| file | agent | split | episodes | probes | memory acc v0 | memory acc v1 | v0-correct probes "
              "scoring 0 on v1 |"), "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['file']} | {s['agent']} | {s['split']} | {s['n_episodes']} | {s['n_probes']} | "
                     f"{format_rate(s['memory_accuracy_v0'], digits=3)} | "
                     f"{format_rate(s['memory_accuracy_v1'], digits=3)} | {s['n_v0_correct_zero_under_v1']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from rlhf_gym.evaluation import write_json_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="bench results files with a DialogueMemory-v0 block")
    parser.add_argument("--out-dir", required=True, help="where the v1 files, rescore.json and table.md go")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    paths = [Path(f) for f in args.files]
    for path in paths:  # a bad argument fails before any work
        if not path.is_file():
            raise FileNotFoundError(f"no such results file: {path}")
    summaries = []
    from tqdm.auto import tqdm

    for path in tqdm(paths, desc="re-scoring", unit="file"):
        new_results, summary = rescore_file(path)
        write_json_atomic(out_dir / path.parent.name / path.name, new_results)
        summaries.append(summary)
    write_json_atomic(out_dir / "rescore.json", {"rule": "v1", "score_tolerance": SCORE_TOLERANCE,
                                                 "files": summaries})
    table = markdown(summaries)
    (out_dir / "table.md").write_text(table, encoding="utf-8")
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
