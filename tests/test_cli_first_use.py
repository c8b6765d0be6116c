"""Bad input and first-use defects of the CLI and the harness (issue 8), each reproduced as a new
user would meet it: every test here failed before its fix.

All tasks are registered from small JSONL files with metric rewards and judges (real models of
the core, no encoder to load), so the whole file runs in seconds."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from rlhf_gym.cli import build_parser, main
from rlhf_gym.evaluation import run_bench, score_predictions, write_json_atomic
from rlhf_gym.rewards.base import MetricReward
from rlhf_gym.rewards.hf import HFRewardModel
from rlhf_gym.tasks import get_task, register_jsonl_task


def _preds(task, make):
    return [{"id": ex.id, "prediction": make(ex)} for ex in task.examples("test")]


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- --help


def _all_parsers(parser, path=("rlhf-gym",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


def test_every_command_help_renders():
    """`rlhf-gym feedback --help` crashed on an unescaped % in a help string: render them all."""
    rendered = [" ".join(path) for path, parser in _all_parsers(build_parser()) if parser.format_help()]
    assert {"rlhf-gym bench", "rlhf-gym feedback", "rlhf-gym train-rm", "rlhf-gym train ppo"} <= set(rendered)


# ------------------------------------------------------------------ bench: --out, --resume, --limit


def test_bench_refuses_to_overwrite_an_existing_out_before_any_work(tiny_task, tmp_path, capsys):
    out = tmp_path / "results.json"
    out.write_text('{"precious": true}')
    # A missing agent file would fail first if the check came after building the agent.
    assert main(["bench", "--agent", "no_such_agent.py:X", "--envs", tiny_task.env_id, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "results.json already exists" in err and "--overwrite" in err and "--resume" in err
    assert json.loads(out.read_text()) == {"precious": True}
    score_out = tmp_path / "scores.json"
    score_out.write_text("{}")
    assert main(["score", "--env", tiny_task.env_id, "--predictions", "nope.jsonl", "--out", str(score_out)]) == 2
    assert "scores.json already exists" in capsys.readouterr().err
    assert main(["bench", "--agent", "reference", "--envs", tiny_task.env_id, "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["envs"][tiny_task.env_id]["metrics"]["bleu"] == pytest.approx(100.0)
    # the finished shards a killed run left are not discarded by a run without --resume either
    killed = tmp_path / "killed.json"
    (tmp_path / "killed.json.shards").mkdir()
    (tmp_path / "killed.json.shards" / "x.json").write_text("{}")
    assert main(["bench", "--agent", "reference", "--envs", tiny_task.env_id, "--out", str(killed)]) == 2
    assert "killed.json.shards holds the finished shards of an unfinished run" in capsys.readouterr().err
    assert (tmp_path / "killed.json.shards" / "x.json").exists()


def test_resume_with_other_settings_is_an_error_that_keeps_the_file(tiny_task, tmp_path, capsys):
    out = tmp_path / "r.json"
    run_bench("lead", [tiny_task.env_id], limit=3, out=out, show_progress=False)
    before = out.read_text()
    assert main(["bench", "--agent", "lead", "--envs", tiny_task.env_id, "--limit", "4", "--out", str(out),
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{tiny_task.env_id} limit=3 (this run: 4)" in err and "--overwrite" in err
    assert main(["bench", "--agent", "reference", "--envs", tiny_task.env_id, "--limit", "3", "--out", str(out),
                 "--resume"]) == 2
    assert "agent 'lead' (this run: 'reference')" in capsys.readouterr().err
    assert out.read_text() == before
    # the same settings resume (and keep the env already there)
    assert run_bench("lead", [tiny_task.env_id], limit=3, out=out, resume=True,
                     show_progress=False)["envs"][tiny_task.env_id]["n"] == 3


@pytest.mark.parametrize("command", [["bench", "--agent", "lead"], ["data", "--env", "X"],
                                     ["score", "--env", "X", "--predictions", "p.jsonl"],
                                     ["sample", "--env", "X", "--out", "s.jsonl"]])
@pytest.mark.parametrize("limit", ["0", "-1", "two"])
def test_limit_must_be_a_positive_count(command, limit, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--limit", limit])
    assert exit_info.value.code == 2 and "argument --limit" in capsys.readouterr().err


def test_limit_is_validated_by_the_library_too(tiny_task):
    with pytest.raises(ValueError, match="limit must be a positive number"):
        run_bench("lead", [tiny_task.env_id], limit=0, show_progress=False)
    with pytest.raises(ValueError, match="limit must be a positive number"):
        score_predictions(tiny_task.env_id, _preds(tiny_task, lambda ex: "x"), limit=-1)


def test_token_level_id_is_not_silently_scored_as_its_utterance_twin(tiny_task, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["bench", "--agent", "lead", "--envs", tiny_task.token_env_id, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{tiny_task.token_env_id} is the token-level twin of {tiny_task.env_id}" in err and not out.exists()
    with pytest.raises(ValueError, match="token-level twin"):
        score_predictions(tiny_task.token_env_id, _preds(tiny_task, lambda ex: "x"))


# ------------------------------------------------------------------ agents that fail


@pytest.mark.parametrize("spec", ["hf:/no/such/dir", "hf:./no_such_dir"])
def test_missing_model_folder_is_one_clear_line(tiny_task, tmp_path, capsys, spec):
    """The bench runs in shards: an error in one is reported as the shard's failure (exit 1)."""
    out = tmp_path / "r.json"
    folder = spec[3:]
    for option in (["--agent", spec], ["--agent", "lead", "--vs", spec], ["--agent", "lead", "--reward", spec]):
        assert main(["bench", *option, "--envs", tiny_task.env_id, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"FileNotFoundError: model folder not found: {folder}" in err and "Traceback" not in err
        assert "--resume" not in err and not out.exists()  # no shard finished: nothing to resume
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        HFRewardModel(folder)


def test_folder_without_a_model_is_named(tmp_path):
    from rlhf_gym.policy import load_hf_config

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a Hugging Face model folder"):
        load_hf_config(tmp_path / "empty")


AGENTS = '''
class ReturnsNone:
    name = "returns-none"
    def act(self, observations, infos):
        return None

class NoneItems:
    name = "none-items"
    def act(self, observations, infos):
        return [None for _ in observations]

class Rambler:
    name = "rambler"
    def act(self, observations, infos):
        with open(__file__ + ".calls", "a") as fh:  # counts act() calls across the module reloads
            fh.write("x")
        return ["la " * 200 for _ in observations]
'''


@pytest.mark.parametrize("cls, message", [
    ("ReturnsNone", "agent 'returns-none' returned None for 2 prompts"),
    ("NoneItems", "agent 'none-items' returned NoneType for q0, not str"),
])
def test_agent_returning_none_is_a_clear_error(tiny_task, tmp_path, capsys, cls, message):
    agent_file = tmp_path / "agents.py"
    agent_file.write_text(AGENTS)
    out = tmp_path / "r.json"
    assert main(["bench", "--agent", f"{agent_file}:{cls}", "--envs", tiny_task.env_id, "--batch-size", "2",
                 "--out", str(out)]) == 1
    assert message in capsys.readouterr().err and not out.exists()


# ------------------------------------------------------------------ one validity rule


def test_responses_over_the_limit_are_rejected_by_env_bench_score_and_leaderboard(tiny_task, tmp_path, capsys):
    import gymnasium as gym

    limit = tiny_task.max_response_chars
    too_long, longest_valid = "x" * (limit + 1), "x" * limit
    env = gym.make(tiny_task.env_id, reward_model=MetricReward("chrf"))
    env.reset(options={"index": 0})
    env.step(longest_valid)
    env.reset(options={"index": 0})
    with pytest.raises(ValueError, match=f"over this env's limit of {limit}"):
        env.step(too_long)

    preds = _preds(tiny_task, lambda ex: "fine")
    preds[2]["prediction"] = too_long
    with pytest.raises(ValueError, match=f"predictions for {tiny_task.env_id}: 1 of 6 responses .* q2: {limit + 1} "
                                         f"characters"):
        score_predictions(tiny_task.env_id, preds)
    # --vs predictions were scored by the judge unchecked
    with pytest.raises(ValueError, match="vs predictions for .* q2"):
        score_predictions(tiny_task.env_id, _preds(tiny_task, lambda ex: "fine"), vs_predictions=preds)
    assert score_predictions(tiny_task.env_id, _preds(tiny_task, lambda ex: longest_valid))["n"] == 6

    from rlhf_gym.leaderboard.validate import (
        SubmissionError,
        build_submission,
        recompute,
    )

    results = run_bench("reference", [tiny_task.env_id], show_progress=False)
    results["envs"][tiny_task.env_id]["generations"][2]["prediction"] = too_long
    with pytest.raises(SubmissionError, match="not valid actions"):
        recompute(build_submission(results), score_predictions)

    # bench stops at the agent's first batch, naming it
    agent_file = tmp_path / "agents.py"
    agent_file.write_text(AGENTS)
    out = tmp_path / "r.json"
    assert main(["bench", "--agent", f"{agent_file}:Rambler", "--envs", tiny_task.env_id, "--batch-size", "2",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"agent 'rambler' on {tiny_task.env_id}: 2 of 2 responses are not valid actions" in err
    assert "q0: 600 characters" in err and not out.exists()
    assert Path(f"{agent_file}.calls").read_text() == "x"  # stopped at its first batch of 3, not after all


def test_score_checks_validity_before_loading_any_model(tmp_path):
    def never():
        raise AssertionError("a model was loaded before the predictions were checked")

    path = _write_jsonl(tmp_path / "v.jsonl", [{"id": f"v{i}", "prompt": "p", "references": ["r"], "split": "test"}
                                               for i in range(3)])
    task = register_jsonl_task("ValidityFirst", path, kind="dialogue", reward=never, judge=never)
    with pytest.raises(ValueError, match="1 of 3 responses are not valid actions"):
        score_predictions(task.env_id, [{"id": "v0", "prediction": "x" * 401}, {"id": "v1", "prediction": "a"},
                                        {"id": "v2", "prediction": "b"}])


# ------------------------------------------------------------------ data the env admits


def test_every_reference_of_every_split_is_a_valid_action_of_the_newest_envs():
    from rlhf_gym.envs.text_env import text_space
    from rlhf_gym.tasks import BUILTIN_TASKS, list_tasks

    latest = [t for t in list_tasks(latest_only=True) if t in BUILTIN_TASKS]
    assert {t.env_id for t in latest} >= {"rlhf_gym/Dialogue-v3", "rlhf_gym/Summarization-v2",
                                          "rlhf_gym/Translation-v2"}
    for task in latest:
        space = text_space(task.max_response_chars)
        for split in ("train", "validation", "test"):
            invalid = [ex.id for ex in task.examples(split) for ref in ex.references if not space.contains(ref)]
            assert invalid == [], (task.env_id, split, invalid[:5])


def test_dialogue_v2_keeps_v1s_test_split_and_drops_only_overlong_training_replies():
    v1, v2 = get_task("rlhf_gym/Dialogue-v1"), get_task("rlhf_gym/Dialogue-v2")
    assert v1.max_response_chars == 300 and v2.max_response_chars == 500
    assert v2.examples("test") == v1.examples("test") and len(v2.examples("test")) == 219
    assert max(len(ex.references[0]) for ex in v1.examples("test")) == 491
    for split, dropped in (("train", 27), ("validation", 1)):
        kept = {ex.id for ex in v2.examples(split)}
        gone = [ex for ex in v1.examples(split) if ex.id not in kept]
        assert len(gone) == dropped and all(len(ex.references[0]) > 500 for ex in gone)
        assert len(kept) == len(v1.examples(split)) - dropped
    assert max(len(ex.references[0]) for ex in v1.examples("train")) == 34641  # the noise v2 drops
    # reward, judge, prompts and token budget are v1's
    assert (v2.kind, v2.source, v2.max_new_tokens) == (v1.kind, v1.source, v1.max_new_tokens)
    assert v2.reward.__qualname__ == v1.reward.__qualname__ and v2.judge is v1.judge


def test_dialogue_v2_multi_turn_episodes_end_before_an_overlong_turn():
    import gymnasium as gym

    env = gym.make("rlhf_gym/Dialogue-MultiTurn-v2", split="train", reward_model=MetricReward("chrf")).unwrapped
    index = next(i for i, ex in enumerate(env.examples)
                 if ex.meta["turn"] + 2 < len(ex.meta["turns"]) and len(ex.meta["turns"][ex.meta["turn"] + 2]) > 500)
    env.reset(options={"index": index})
    _, _, terminated, _, _ = env.step("ok")
    assert terminated  # v1 would ask for the overlong turn next
    legacy = gym.make("rlhf_gym/Dialogue-MultiTurn-v1", split="train", reward_model=MetricReward("chrf")).unwrapped
    legacy.reset(options={"example_id": env.examples[index].id})
    assert legacy.step("ok")[2] is False


def test_a_task_file_gets_a_limit_that_admits_its_references_or_a_clear_error(tmp_path):
    rows = [{"id": f"r{i}", "prompt": "p", "references": ["y" * (100 + 100 * i)], "split": "test"} for i in range(6)]
    path = _write_jsonl(tmp_path / "long.jsonl", rows)
    task = register_jsonl_task("LongRefs", path, kind="dialogue")
    assert task.max_response_chars == 600 and len(task.examples("test")) == 6
    strict = register_jsonl_task("LongRefsStrict", path, kind="dialogue", max_response_chars=400)
    with pytest.raises(ValueError, match="2 examples of split 'test' have a reference longer than the env's "
                                         "response limit of 400 characters.*'r5', 600 characters"):
        strict.examples("test")


# ------------------------------------------------------------------ tasks from files, every command


def test_file_without_split_fields_always_has_a_test_split(tmp_path):
    from rlhf_gym.data import load_file

    rows = [{"id": f"q{i}", "prompt": f"What is {i} + 1?", "references": [str(i + 1)]} for i in range(12)]
    path = _write_jsonl(tmp_path / "small.jsonl", rows)
    splits = {s: [ex.id for ex in load_file(path, s)] for s in ("train", "validation", "test")}
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [10, 1, 1]
    assert sorted(i for ids in splits.values() for i in ids) == sorted(r["id"] for r in rows)
    shuffled = _write_jsonl(tmp_path / "shuffled.jsonl", rows[::-1])
    assert {s: sorted(ex.id for ex in load_file(shuffled, s)) for s in splits} == {s: sorted(v) for s, v in
                                                                                  splits.items()}
    big = _write_jsonl(tmp_path / "big.jsonl", [{"id": i, "prompt": "p", "references": ["r"]} for i in range(400)])
    assert [len(load_file(big, s)) for s in ("train", "validation", "test")] == [360, 20, 20]
    with pytest.raises(ValueError, match="needs at least 3 records"):
        load_file(_write_jsonl(tmp_path / "two.jsonl", rows[:2]), "test")
    mixed = _write_jsonl(tmp_path / "mixed.jsonl", [rows[0], {**rows[1], "split": "test"}, rows[2]])
    with pytest.raises(ValueError, match="line 2 has a 'split' field and .*line 1 has none"):
        load_file(mixed, "test")


def test_task_file_option_works_with_every_command(tmp_path, capsys, monkeypatch):
    from rlhf_gym.tasks import TASK_FILES_ENV

    monkeypatch.delenv(TASK_FILES_ENV, raising=False)
    rows = [{"id": f"q{i}", "prompt": f"Say the number {i}.", "references": [f"The number is {i}."]}
            for i in range(40)]
    data = _write_jsonl(tmp_path / "my-numbers.jsonl", rows)
    spec = f"{data},kind=dialogue,name=Numbers"
    # the option goes before or after the command
    assert main(["--task-file", spec, "data", "--env", "rlhf_gym/Numbers-v0", "--split", "test"]) == 0
    test_ids = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert len(test_ids) == 2
    assert os.environ[TASK_FILES_ENV] == spec  # child processes register it too
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"id": i, "prediction": "The number is."} for i in test_ids])
    out = tmp_path / "s.json"
    assert main(["score", "--env", "rlhf_gym/Numbers-v0", "--task-file", spec, "--predictions", str(preds),
                 "--reward", "chrf", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["envs"]["rlhf_gym/Numbers-v0"]["n"] == 2
    capsys.readouterr()
    assert main(["--task-file", str(data), "envs"]) == 2
    assert "needs kind=dialogue|translation|summarization" in capsys.readouterr().err
    assert main(["--task-file", f"{tmp_path / 'nope.jsonl'},kind=dialogue", "envs"]) == 2
    assert "data file not found" in capsys.readouterr().err


def test_task_files_env_var_registers_on_import(tmp_path):
    import subprocess
    import sys

    data = _write_jsonl(tmp_path / "qa.jsonl", [{"id": f"q{i}", "prompt": "p", "references": ["r"]} for i in range(5)])
    code = "import rlhf_gym.tasks as t; print(t.get_task('rlhf_gym/qa-v3').source)"
    env = {**os.environ, "RLHF_GYM_TASK_FILES": f"{data},kind=translation,version=3",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(data.resolve())


# ------------------------------------------------------------------ file modes


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(tmp_path, mask):
    from rlhf_gym.paths import current_umask
    from rlhf_gym.rewards.embedding import RewardHead, save_head

    old = os.umask(mask)
    try:
        assert current_umask() == mask
        write_json_atomic(tmp_path / "r.json", {"a": 1})
        save_head(RewardHead("preference"), tmp_path / "h.safetensors")
        (tmp_path / "plain.txt").write_text("x")  # what an ordinary open() gives: the expected mode
    finally:
        os.umask(old)
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert expected == 0o666 & ~mask
    for name in ("r.json", "h.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name


def test_saved_policies_honour_the_umask(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_gym.policy import PolicyMeta, save_policy
    from rlhf_gym.tokenizer import load_tokenizer

    tok = load_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=8, n_layer=1, n_head=2))
    old = os.umask(0o022)
    try:
        out = save_policy(model, tok, PolicyMeta(env_id="rlhf_gym/Dialogue-v2", kind="dialogue", arch="causal"),
                          tmp_path / "policy")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o644}, modes
