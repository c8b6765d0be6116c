"""The human-feedback loop from the CLI: results -> queue -> labels posted through the real
/compare page -> export -> reward head -> PPO -> bench -> new pairs queued.

The "human" is a deterministic rule (prefer the response with more distinct words, then the
longer one), applied to the texts the page shows, so the labels are learnable by the
reward head's features and every label goes through the same server and storage as a human's.
"""

from __future__ import annotations

import html
import json
import re

import pytest

pytest.importorskip("fastapi", reason="needs the server extra: pip install 'rlhf-gym[server]'")
from fastapi.testclient import TestClient  # noqa: E402

from rlhf_gym.cli import main  # noqa: E402
from rlhf_gym.leaderboard.app import COOKIE, create_app  # noqa: E402
from rlhf_gym.leaderboard.db import Database  # noqa: E402
from rlhf_gym.leaderboard.feedback import queue_status  # noqa: E402

ENV = "rlhf_gym/Dialogue-v0"
N = 32  # test examples per results file


def human_preference(left: str, right: str) -> str:
    def key(text: str):
        return len(set(text.lower().split())), len(text)

    return "tie" if key(left) == key(right) else ("left" if key(left) > key(right) else "right")


@pytest.fixture(scope="module")
def results_files(tmp_path_factory):
    """Results of the real ``lead`` and ``retrieval`` agents on the first N test examples,
    written WITHOUT prompts: queueing has to find them in the task's data."""
    from rlhf_gym.agents import make_agent
    from rlhf_gym.evaluation import generate
    from rlhf_gym.tasks import get_task

    task = get_task(ENV)
    examples = task.examples("test")[:N]
    out = tmp_path_factory.mktemp("results")
    files = {}
    for agent in ("lead", "retrieval"):
        gens = generate(make_agent(agent, task), examples, show_progress=False)
        assert all(set(g) == {"id", "prediction"} for g in gens)
        files[agent] = out / f"{agent}.json"
        files[agent].write_text(json.dumps({"schema_version": 1, "agent": {"name": agent, "spec": agent},
                                            "envs": {ENV: {"env_id": ENV, "split": "test", "limit": N,
                                                           "generations": gens}}}))
    return files


def parse_pair(page: str) -> dict | None:
    if 'id="done"' in page:
        return None

    def section(pattern: str) -> str:
        return html.unescape(re.search(pattern, page, re.S).group(1))

    return {"id": int(re.search(r'name="pair_id" value="(\d+)"', page).group(1)),
            "prompt": section(r'<section class="prompt">.*?<pre class="text">(.*?)</pre>'),
            "left": section(r'id="resp-a"><h2>Response A</h2><pre class="text">(.*?)</pre>'),
            "right": section(r'id="resp-b"><h2>Response B</h2><pre class="text">(.*?)</pre>')}


def label_all(db_path, name: str, capsys) -> list[dict]:
    """Create an annotator with the CLI, log in on /compare with its token and label every pair
    the page serves; returns what was seen and chosen."""
    assert main(["leaderboard", "add-user", name, "--db", str(db_path)]) == 0
    token = capsys.readouterr().out.strip()
    seen = []
    with TestClient(create_app(str(db_path))) as c:
        r = c.post("/compare/login", data={"token": token}, follow_redirects=False)
        assert r.status_code == 303 and COOKIE in r.cookies
        while (pair := parse_pair(c.get("/compare").text)) is not None:
            pair["choice"] = human_preference(pair["left"], pair["right"])
            r = c.post("/compare/label", data={"pair_id": str(pair["id"]), "choice": pair["choice"]},
                       follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/compare?msg=saved"
            seen.append(pair)
            assert len(seen) <= 10 * N, "the page keeps serving pairs"
    return seen


def queue_and_label(tmp_path, results_files, capsys):
    db_path = tmp_path / "feedback.db"
    lead, retrieval = results_files["lead"], results_files["retrieval"]
    assert main(["feedback", "queue", "--results", str(retrieval), str(lead), "--db", str(db_path)]) == 0
    assert "retrieval vs lead:" in capsys.readouterr().out
    seen = label_all(db_path, "annotator-1", capsys)
    return db_path, seen


def test_feedback_help_and_missing_prompts(results_files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["feedback", "--help"])
    assert exit_.value.code == 0 and "95% Wilson CI" in capsys.readouterr().out
    db_path = tmp_path / "fb.db"
    assert main(["feedback", "queue", "--results", str(results_files["retrieval"]), str(results_files["lead"]),
                 "--db", str(db_path)]) == 0
    from rlhf_gym.tasks import get_task

    prompts = {ex.id: ex.prompt for ex in get_task(ENV).examples("test")[:N]}
    with Database(db_path).tx() as tx:
        rows = tx.all("SELECT example_id, prompt FROM feedback_pairs")
    assert rows and all(r["prompt"] == prompts[r["example_id"]] for r in rows)


def test_queue_label_export_train_rm(results_files, tmp_path, capsys):
    """Fast path of one round: labels through the page -> `loop status` -> `loop round` refusing
    too few labels (after exporting them) -> `train-rm` on the export learns the rule."""
    db_path, seen = queue_and_label(tmp_path, results_files, capsys)
    [group] = queue_status(Database(db_path))
    assert group["pairs"] == len(seen) >= N - 4 and group["pending"] == 0 and group["labelled"] == len(seen)
    decisive = sum(p["choice"] != "tie" for p in seen)
    assert group["decisive_labels"] == decisive
    assert main(["loop", "status", "--db", str(db_path)]) == 0
    assert f"{len(seen)} labelled, 0 pending" in capsys.readouterr().out

    round_dir = tmp_path / "round1"
    argv = ["loop", "round", "--env", ENV, "--db", str(db_path), "--candidate", str(results_files["retrieval"]),
            "--policy", "unused", "--out", str(round_dir), "--min-pairs", str(decisive + 1)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "too few labelled pairs" in err and f"{decisive} decisive labels" in err and "/compare" in err
    assert not (round_dir / "rm.safetensors").exists()

    prefs = [json.loads(x) for x in (round_dir / "prefs.jsonl").read_text().splitlines()]
    assert len(prefs) == decisive
    by_prompt_pair = {(p["prompt"], frozenset((p["left"], p["right"]))): p for p in seen}
    for x in prefs:  # every exported preference is what the annotator chose on the page
        p = by_prompt_pair[(x["prompt"], frozenset((x["chosen"], x["rejected"])))]
        assert x["chosen"] == (p["left"] if p["choice"] == "left" else p["right"])

    head = tmp_path / "rm.safetensors"
    assert main(["train-rm", "--prefs", str(round_dir / "prefs.jsonl"), "--out", str(head), "--quiet"]) == 0
    assert "held-out pairwise accuracy" in capsys.readouterr().out
    info = json.loads(head.with_suffix(".json").read_text())
    assert sum(info["pairs"].values()) == decisive
    from rlhf_gym.rewards.embedding import EmbeddingRewardModel

    rm = EmbeddingRewardModel.from_file(head)
    chosen = rm([x["prompt"] for x in prefs], [x["chosen"] for x in prefs], [[] for _ in prefs])
    rejected = rm([x["prompt"] for x in prefs], [x["rejected"] for x in prefs], [[] for _ in prefs])
    assert (chosen > rejected).mean() >= 0.75  # the head picked up the annotator's rule


@pytest.fixture
def tiny_policy(tmp_path):
    from test_ppo import make_policy

    return make_policy(tmp_path / "policy")


@pytest.mark.slow  # ~1.5-2 min on 2 shared cores; the fast test above covers queue..train-rm
def test_loop_round_end_to_end(results_files, tmp_path, tiny_policy, capsys):
    db_path, seen = queue_and_label(tmp_path, results_files, capsys)
    decisive = sum(p["choice"] != "tie" for p in seen)
    round_dir = tmp_path / "round1"
    argv = ["loop", "round", "--env", ENV, "--db", str(db_path), "--baseline", str(results_files["lead"]),
            "--candidate", str(results_files["retrieval"]), "--policy", str(tiny_policy), "--out", str(round_dir),
            "--limit", str(N), "--min-pairs", "10", "--iterations", "2", "--batch-size", "8",
            "--mini-batch-size", "4", "--no-progress", "--no-plot"]
    assert main(argv) == 0
    out = capsys.readouterr().out

    # labels -> reward head, with its held-out accuracy reported
    assert len((round_dir / "prefs.jsonl").read_text().splitlines()) == decisive
    assert (round_dir / "rm.safetensors").exists()
    rm = json.loads((round_dir / "rm.json").read_text())
    assert sum(rm["pairs"].values()) == decisive and rm["pairs"]["eval"] >= 1
    assert 0.0 <= rm["eval_accuracy"] <= 1.0
    assert f"held-out pairwise accuracy {rm['eval_accuracy']:.3f} on {rm['pairs']['eval']} pairs" in out
    # PPO against that head
    metrics = [json.loads(x) for x in (round_dir / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2]
    cfg = json.loads((round_dir / "ppo" / "ppo_config.json").read_text())
    assert cfg["reward"] == str(round_dir / "rm.safetensors") and cfg["env_id"] == ENV
    assert cfg["iterations"] == 2 and cfg["batch_size"] == 8
    # bench of the new policy
    results = json.loads((round_dir / "results.json").read_text())
    assert results["agent"]["spec"] == f"ppo:{round_dir / 'ppo'}"
    block = results["envs"][ENV]
    assert block["n"] == N and len(block["generations"]) == N and "reward_mean" in block["metrics"]
    # new pairs, new policy vs the previous candidate, waiting for labels
    groups = {(g["system_a"], g["system_b"]): g for g in queue_status(Database(db_path))}
    new = groups[(f"ppo:{round_dir / 'ppo'}", "retrieval")]
    assert new["pairs"] > 0 and new["pending"] == new["pairs"] and new["labelled"] == 0
    summary = json.loads((round_dir / "round.json").read_text())
    assert summary["queued_next"]["added"] == new["pairs"]
    assert f"--candidate {round_dir / 'results.json'} --policy {round_dir / 'ppo'}" in out
    assert f"--out {tmp_path / 'round2'}" in summary["next_command"]

    # resumable: a second run skips every step and changes nothing
    before = (round_dir / "ppo" / "metrics.jsonl").read_text(), (round_dir / "rm.safetensors").read_bytes()
    assert main(argv) == 0
    out = capsys.readouterr().out
    for step in ("[1/5] export: ", "[2/5] reward head: ", "[3/5] PPO: ", "[4/5] bench: "):
        assert re.search(re.escape(step) + r".*, skipped\n", out), step
    assert "0 pairs queued" in out
    assert before == ((round_dir / "ppo" / "metrics.jsonl").read_text(), (round_dir / "rm.safetensors").read_bytes())
    assert main(["loop", "status", "--db", str(db_path), "--out", str(round_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{new['pairs']} pending" in out and "ppo done" in out
