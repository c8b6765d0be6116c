"""bench in shards: merging, per-shard retries, shard-level resume; and the Ray executor (slow)."""

import json
import sys
import textwrap

import pytest

from rlhf_gym.bench_shards import ShardsFailed
from rlhf_gym.evaluation import run_bench, score_predictions, summarize_shards

# An agent that answers like `lead` but fails on a shard while a marker file exists, and logs
# which examples it was asked about: enough to drive failures, retries and resume for real.
FLAKY_AGENT = '''
import json, os
from pathlib import Path
from rlhf_gym.agents import LeadAgent

class FlakyLead:
    name = "flaky"
    def __init__(self):
        self.lead = LeadAgent("summarization")
    def act(self, observations, infos):
        ids = [info["example_id"] for info in infos]
        with open(os.environ["FLAKY_LOG"], "a") as fh:
            fh.write(json.dumps(ids) + "\\n")
        marker = Path(os.environ["FLAKY_MARKER"])
        if marker.exists() and os.environ["FLAKY_ID"] in ids:
            if marker.read_text() == "once":
                marker.unlink()
            raise RuntimeError("flaky agent: simulated failure")
        return self.lead.act(observations, infos)
'''


@pytest.fixture
def flaky(tmp_path, monkeypatch):
    agent = tmp_path / "flaky_agent.py"
    agent.write_text(textwrap.dedent(FLAKY_AGENT))
    paths = {"log": tmp_path / "calls.jsonl", "marker": tmp_path / "fail"}
    monkeypatch.setenv("FLAKY_LOG", str(paths["log"]))
    monkeypatch.setenv("FLAKY_MARKER", str(paths["marker"]))
    monkeypatch.setenv("FLAKY_ID", "q4")
    return f"{agent}:FlakyLead", paths


def test_shards_merge_to_the_same_block_as_one_shard_and_as_score(tiny_task):
    one = run_bench("lead", [tiny_task.env_id], vs_spec="reference", batch_size=2, shard_size=6, show_progress=False)
    three = run_bench("lead", [tiny_task.env_id], vs_spec="reference", batch_size=2, shard_size=2,
                      show_progress=False)
    assert one["envs"] == three["envs"]
    block = three["envs"][tiny_task.env_id]
    assert block["n"] == 6 and [g["id"] for g in block["generations"]] == [f"q{i}" for i in range(6)]
    # the corpus metrics are over all shards: the same as scoring the predictions in one go
    predictions = [{"id": g["id"], "prediction": g["prediction"]} for g in block["generations"]]
    vs = [{"id": g["id"], "prediction": g["vs_prediction"]} for g in block["generations"]]
    assert score_predictions(tiny_task.env_id, predictions, vs_predictions=vs)["metrics"] == block["metrics"]


def test_shards_that_do_not_tile_the_examples_are_rejected(tiny_task):
    block = run_bench("lead", [tiny_task.env_id], shard_size=3, show_progress=False)["envs"][tiny_task.env_id]
    shard = {"start": 0, "stop": 3, "predictions": [g["prediction"] for g in block["generations"][:3]],
             "rewards": [0.0] * 3, "components": {}, "judge_scores": [0.0] * 3, "judge_ref_scores": [0.0] * 3,
             "reward_model": {}, "judge": {}}
    with pytest.raises(ValueError, match=r"do not cover examples 0..6"):
        summarize_shards(tiny_task, [shard], split="test", limit=None)
    with pytest.raises(ValueError, match=r"do not cover examples 0..6"):
        summarize_shards(tiny_task, [shard, shard], split="test", limit=None)


def test_a_failed_shard_is_retried_and_reported(tiny_task, flaky, capsys):
    spec, paths = flaky
    paths["marker"].write_text("once")
    results = run_bench(spec, [tiny_task.env_id], batch_size=2, shard_size=2, max_retries=1, show_progress=False)
    assert "shard TinyTest-v0[4:6] failed (try 1 of 2): RuntimeError: flaky agent: simulated failure; retrying" \
        in capsys.readouterr().err
    clean = run_bench("lead", [tiny_task.env_id], batch_size=2, shard_size=2, show_progress=False)
    assert results["envs"][tiny_task.env_id]["metrics"] == clean["envs"][tiny_task.env_id]["metrics"]


def test_resume_redoes_only_the_shards_a_failed_run_did_not_finish(tiny_task, flaky, tmp_path):
    spec, paths = flaky
    out = tmp_path / "r.json"
    paths["marker"].write_text("always")
    with pytest.raises(ShardsFailed, match=r"1 shard\(s\) failed after 1 tries: TinyTest-v0\[4:6\].*--resume"):
        run_bench(spec, [tiny_task.env_id], batch_size=2, shard_size=2, out=out, show_progress=False)
    assert not out.exists()  # the env is not complete: no block for it
    assert len(list((tmp_path / "r.json.shards").glob("*.json"))) == 2
    paths["marker"].unlink()
    paths["log"].unlink()
    resumed = run_bench(spec, [tiny_task.env_id], batch_size=2, shard_size=2, out=out, resume=True,
                        show_progress=False)
    asked = [json.loads(line) for line in paths["log"].read_text().splitlines()]
    assert asked == [["q4", "q5"]]  # only the missing shard ran again
    assert not (tmp_path / "r.json.shards").exists()  # cleaned up once the env block is written
    clean = run_bench("lead", [tiny_task.env_id], batch_size=2, shard_size=2, show_progress=False)
    assert json.loads(out.read_text())["envs"] == resumed["envs"]
    assert resumed["envs"][tiny_task.env_id]["metrics"] == clean["envs"][tiny_task.env_id]["metrics"]


def test_bad_executor_settings_and_missing_ray_are_clear_errors(tiny_task, monkeypatch):
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        run_bench("lead", [tiny_task.env_id], executor="dask", show_progress=False)
    with pytest.raises(ValueError, match="--address needs --executor ray"):
        run_bench("lead", [tiny_task.env_id], address="ray://x:10001", show_progress=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ImportError, match=r"--executor ray needs Ray: pip install"):
        run_bench("lead", [tiny_task.env_id], executor="ray", show_progress=False)


@pytest.mark.slow
def test_ray_bench_equals_the_local_bench_with_a_retried_shard(flaky, tmp_path, monkeypatch):
    """A local Ray with 2 CPUs (about 15 s to start), 2 shards of 2 envs, one failing once
    on its worker: the results equal the single-process run's (Ray's workers inherit this
    process's environment, so they find the flaky agent's files)."""
    pytest.importorskip("ray")
    spec, paths = flaky
    envs = ["rlhf_gym/Summarization-v0", "rlhf_gym/Dialogue-v0"]
    local = run_bench(spec, envs, limit=12, shard_size=8, batch_size=4, show_progress=False,
                      out=tmp_path / "local.json")
    paths["marker"].write_text("once")
    monkeypatch.setenv("FLAKY_ID", local["envs"][envs[0]]["generations"][10]["id"])  # in the 2nd shard
    on_ray = run_bench(spec, envs, limit=12, shard_size=8, batch_size=4, executor="ray", num_cpus=2,
                       show_progress=False, out=tmp_path / "ray.json")
    assert not paths["marker"].exists()  # the shard did fail once, and was retried
    assert on_ray["envs"] == local["envs"]
