"""TRL and verl adapters: each reward they return is the reward ``env.step`` gives for the same
example and response (checked against a separately made env, step by step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPLETIONS = ["The number 0 is a fine number.", "numbers", "", "Number four is fine, a fine number.",
               "x" * 500]  # the last is over the env's 400-character limit: cut, as the project's trainers do


def step_rewards(env_id, ids, texts, split="train"):
    """What a user gets in process: reset on the example, step with the response."""
    from rlhf_gym.ppo.rollout import fit_action

    env = gym.make(env_id, split=split)
    out = []
    for example_id, text in zip(ids, texts):
        env.reset(options={"example_id": example_id})
        out.append(env.step(fit_action(text, env.unwrapped.task.max_response_chars))[1])
    return out


@pytest.fixture
def task_ids(tiny_task):
    ids = [ex.id for ex in tiny_task.examples("train")]
    return [ids[n % len(ids)] for n in range(len(COMPLETIONS))]


def test_trl_reward_func_equals_env_step_plain_and_conversational(tiny_task, task_ids):
    from rlhf_gym.integrations.trl import make_reward_func, prompt_records

    reward_func = make_reward_func(tiny_task.env_id)
    assert reward_func.__name__ == tiny_task.env_id
    rows = {r["example_id"]: r["prompt"] for r in prompt_records(tiny_task.env_id)}
    expected = step_rewards(tiny_task.env_id, task_ids, COMPLETIONS)
    assert len(set(expected)) >= 4  # the rewards really depend on the completion

    plain = reward_func(prompts=[rows[i] for i in task_ids], completions=COMPLETIONS, example_id=task_ids,
                        completion_ids=[[1]] * 5, trainer_state=None)  # extra TRL keywords are ignored
    assert plain == expected

    chat_rows = {r["example_id"]: r["prompt"] for r in prompt_records(tiny_task.env_id, conversational=True)}
    assert chat_rows[task_ids[0]] == [{"role": "user", "content": rows[task_ids[0]]}]
    chat = reward_func(prompts=[chat_rows[i] for i in task_ids],
                       completions=[[{"role": "assistant", "content": c}] for c in COMPLETIONS], example_id=task_ids)
    assert chat == expected


def test_trl_reward_func_errors(tiny_task, task_ids):
    from rlhf_gym.integrations.trl import make_reward_func

    reward_func = make_reward_func(tiny_task.env_id)
    with pytest.raises(KeyError, match="no 'example_id' column"):
        reward_func(prompts=["p"], completions=["c"], answer=["a"])
    with pytest.raises(ValueError, match="not in split 'train'.*'q0'"):
        reward_func(prompts=["p"], completions=["c"], example_id=["q0"])  # q0 is a test example
    with pytest.raises(TypeError, match="kl_coef"):
        make_reward_func(tiny_task.env_id, kl_coef=0.1)
    # The env's other kwargs work as in gymnasium.make: a reward spec replacing the default.
    bleu = make_reward_func(tiny_task.env_id, reward_model="bleu")
    assert bleu(prompts=["p"], completions=[COMPLETIONS[0]], example_id=task_ids[:1]) != \
        reward_func(prompts=["p"], completions=[COMPLETIONS[0]], example_id=task_ids[:1])


def test_verl_compute_score_equals_env_step(tiny_task, task_ids):
    from rlhf_gym.integrations.verl import compute_score, compute_score_batch, verl_records

    rows = {r["extra_info"]["example_id"]: r for r in verl_records(tiny_task.env_id)}
    expected = step_rewards(tiny_task.env_id, task_ids, COMPLETIONS)
    singles = [compute_score(rows[i]["data_source"], text, rows[i]["reward_model"]["ground_truth"],
                             rows[i]["extra_info"]) for i, text in zip(task_ids, COMPLETIONS)]
    assert singles == expected
    batch = compute_score_batch([rows[i]["data_source"] for i in task_ids], COMPLETIONS,
                                [tuple(rows[i]["reward_model"]["ground_truth"]) for i in task_ids],
                                [rows[i]["extra_info"] for i in task_ids])
    assert batch == expected
    row = rows[task_ids[0]]
    with pytest.raises(ValueError, match="does not match"):
        compute_score(row["data_source"], "x", ["another reference"], row["extra_info"])
    with pytest.raises(ValueError, match="extra_info must hold the rlhf-gym 'example_id'"):
        compute_score(row["data_source"], "x", None, {"index": 0})
    # verl's reward_kwargs reach the env: the test split's example is found with split=test.
    test_id = tiny_task.examples("test")[0].id
    assert compute_score(tiny_task.env_id, "x", None, {"example_id": test_id}, split="test") == \
        step_rewards(tiny_task.env_id, [test_id], ["x"], split="test")[0]


@pytest.mark.parametrize("fmt", ["trl", "trl-chat", "verl"])
def test_data_command_writes_trainer_datasets(tiny_task, fmt, capsys):
    from rlhf_gym.cli import main

    assert main(["data", "--env", tiny_task.env_id, "--format", fmt, "--limit", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    train = tiny_task.examples("train")[:3]
    if fmt == "verl":
        assert [r["extra_info"]["example_id"] for r in rows] == [ex.id for ex in train]
        assert rows[0]["prompt"] == [{"role": "user", "content": train[0].prompt}]
        assert rows[0]["reward_model"]["ground_truth"] == list(train[0].references)
    else:
        assert [r["example_id"] for r in rows] == [ex.id for ex in train]
        assert rows[1]["prompt"] == (train[1].prompt if fmt == "trl" else [{"role": "user", "content": train[1].prompt}])


def test_policy_formatted_prompts_match_the_project_trainers(tiny_task):
    """With a policy's (tokenizer, meta) the prompt is what the project's own rollouts feed that
    policy (here the committed tiny SFT policy: prompt + suffix, cut from the left to its budget)."""
    from rlhf_gym.integrations import formatted_prompt
    from rlhf_gym.policy import PolicyMeta, encode_prompts
    from rlhf_gym.tokenizer import load_tokenizer

    policy = ROOT / "baselines/sft/dialogue"
    tok, meta = load_tokenizer(str(policy)), PolicyMeta.load(policy)
    examples = tiny_task.examples("train")[:3]
    assert [formatted_prompt(ex, tok, meta) for ex in examples] == [ex.prompt + meta.prompt_suffix for ex in examples]
    meta.max_prompt_len = 5  # a budget the prompts exceed, so the left cut is exercised
    want = encode_prompts(tok, [ex.prompt for ex in examples], meta)
    assert all(len(ids) == 5 for ids in want)
    got = [formatted_prompt(ex, tok, meta) for ex in examples]
    assert [tok(p, add_special_tokens=False)["input_ids"] for p in got] == want
    with pytest.raises(ValueError, match="no chat template"):
        formatted_prompt(examples[0], tok, meta, conversational=True)


@pytest.mark.slow
def test_trl_grpo_example_trains_and_logs(tmp_path):
    """examples/trl_grpo.py: TRL's GRPOTrainer on Dialogue-v1 with the tiny SFT policy, 2 steps on
    CPU; its logged rewards are the env's."""
    pytest.importorskip("trl")
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(ROOT / "examples/trl_grpo.py"), "--steps", "2", "--out", str(tmp_path / "run"),
                    "--log", str(log)], check=True, env=env, timeout=1200)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert len(steps) == 2 and all("reward" in r for r in steps)
    check = next(r for r in records if r["kind"] == "reward_check")
    assert check["max_abs_diff"] == 0.0 and check["n"] >= 8
