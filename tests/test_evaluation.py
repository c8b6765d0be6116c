import json

import pytest
import sacrebleu

from rlhf_gym.cli import main
from rlhf_gym.evaluation import RESULTS_SCHEMA_VERSION, run_bench, score_predictions


def _preds(task, make):
    return [{"id": ex.id, "prediction": make(ex)} for ex in task.examples("test")]


def test_score_predictions_matches_sacrebleu_and_reference_scores_100(tiny_task):
    block = score_predictions(tiny_task.env_id, _preds(tiny_task, lambda ex: ex.references[0]))
    m = block["metrics"]
    assert block["n"] == 6 and m["bleu"] == pytest.approx(100.0) and m["rougeL"] == pytest.approx(100.0)
    assert m["win_rate_vs_reference"]["mean"] == 0.5 and m["win_rate_vs_reference"]["ties"] == 6
    hyps = [f"Number {i} is fine." for i in range(6)]
    block = score_predictions(tiny_task.env_id, [{"id": f"q{i}", "prediction": h} for i, h in enumerate(hyps)])
    refs = [ex.references[0] for ex in tiny_task.examples("test")]
    assert block["metrics"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert block["metrics"]["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert block["metrics"]["win_rate_vs_reference"]["mean"] < 0.5
    assert [g["id"] for g in block["generations"]] == [f"q{i}" for i in range(6)]


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p[:-1], "1 missing ids, e.g. q5"),
    (lambda p: p + [{"id": "zzz", "prediction": "x"}], "1 ids not in this split, e.g. zzz"),
    (lambda p: p + [dict(p[0])], "duplicate ids: q0"),
    (lambda p: [{"id": "q0", "prediction": 3}] + p[1:], "'prediction' must be a string"),
])
def test_bad_prediction_sets_are_rejected_with_the_problem_named(tiny_task, mutate, message):
    good = _preds(tiny_task, lambda ex: "x")
    with pytest.raises(ValueError, match=message):
        score_predictions(tiny_task.env_id, mutate(good))


def test_bench_writes_a_schema_versioned_results_file_and_resumes(tiny_task, tmp_path):
    out = tmp_path / "r.json"
    results = run_bench("lead", [tiny_task.env_id], vs_spec="reference", out=out, show_progress=False)
    on_disk = json.loads(out.read_text())
    assert on_disk["schema_version"] == RESULTS_SCHEMA_VERSION == results["schema_version"]
    block = on_disk["envs"][tiny_task.env_id]
    assert block["metrics"]["win_rate_vs_agent"]["n"] == 6
    assert {"sacrebleu", "rouge-score", "torch"} <= set(on_disk["packages"])
    assert all(g["vs_prediction"] == g["references"][0] for g in block["generations"])
    # resume: the env already in the file is kept, not recomputed
    block["metrics"]["bleu"] = -1.0
    out.write_text(json.dumps(on_disk))
    resumed = run_bench("lead", [tiny_task.env_id], vs_spec="reference", out=out, resume=True, show_progress=False)
    assert resumed["envs"][tiny_task.env_id]["metrics"]["bleu"] == -1.0


def test_cli_data_then_score_round_trip(tiny_task, tmp_path, capsys):
    assert main(["data", "--env", tiny_task.env_id, "--split", "test"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in lines] == [f"q{i}" for i in range(6)] and all(r["references"] for r in lines)
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(json.dumps({"id": r["id"], "prediction": r["references"][0]}) for r in lines))
    out = tmp_path / "s.json"
    assert main(["score", "--env", tiny_task.env_id, "--predictions", str(preds), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["envs"][tiny_task.env_id]["metrics"]["bleu"] == pytest.approx(100.0)


def test_cli_errors_are_one_clear_line_and_write_nothing(tiny_task, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "q0", "prediction": "a"}\n{broken\n')
    out = tmp_path / "s.json"
    assert main(["score", "--env", tiny_task.env_id, "--predictions", str(preds), "--out", str(out)]) == 2
    assert "line 2: not valid JSON" in capsys.readouterr().err and not out.exists()
    assert main(["bench", "--agent", "lead", "--envs", "rlhf_gym/Nope-v0", "--out", str(out)]) == 2
    assert "unknown env id 'rlhf_gym/Nope-v0'" in capsys.readouterr().err and not out.exists()
