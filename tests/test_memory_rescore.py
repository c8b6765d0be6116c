"""baselines/memory_rescore.py: recorded DialogueMemory-v0 replies replayed through v1, without generating."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import rlhf_gym  # noqa: F401
from rlhf_gym.memory.plan import load_episodes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "baselines"))
import memory_rescore  # noqa: E402

V0 = "rlhf_gym/DialogueMemory-v0"


def test_rescore_turns_store_dumps_to_zero_and_keeps_answers(tmp_path):
    from rlhf_gym.evaluation import run_bench

    run_bench("reference", [V0], limit=3, reward="chrf", out=tmp_path / "ref.json", show_progress=False)
    results = json.loads((tmp_path / "ref.json").read_text())
    episodes = {ep.id: ep for ep in load_episodes("test")}
    dumped = kept = 0
    probes = [r for r in results["envs"][V0]["generations"] if r["is_probe"]]
    for k, r in enumerate(probes):  # every other probe reply: the right answer plus the other values told so far
        ep = episodes[r["id"]]
        others = ep.other_values(ep.probe_at[r["turn"]], r["turn"])
        if k % 2 == 0 and others:
            r["prediction"] = (r["answer"] + ". " + ". ".join(others))[:300]
            dumped += 1
        else:
            kept += 1  # the reference reply as recorded: it answers, names nothing else
    (tmp_path / "dump.json").write_text(json.dumps(results))
    assert dumped >= 2 and kept >= 1
    new, summary = memory_rescore.rescore_file(tmp_path / "dump.json")
    block = new["envs"]["rlhf_gym/DialogueMemory-v1"]
    probes = [g for g in block["generations"] if g["is_probe"]]
    assert summary["memory_accuracy_v0"]["count"] == len(probes)  # v0: every dump scores
    assert summary["memory_accuracy_v1"]["count"] == kept == block["metrics"]["memory_accuracy"]["count"]
    assert summary["n_v0_correct_zero_under_v1"] == dumped
    assert all(g["other_values_named"] for g in probes if g["memory_correct"] == 0.0)
    assert summary["n_turns_score_off"] == dumped  # chrF of the changed replies differs; the rest replays exactly


def test_rescore_refuses_a_file_without_v0(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"agent": {"spec": "x"}, "envs": {}}))
    with pytest.raises(ValueError, match="no rlhf_gym/DialogueMemory-v0 block"):
        memory_rescore.rescore_file(tmp_path / "x.json")
