"""DialogueMemory-v0: determinism, check_env, scoring rule, oracle/echo through bench, vector env.

The reward model is sentence chrF (``reward_model="chrf"``) to keep the suite fast; the memory
score does not depend on it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rlhf_gym  # noqa: F401
from rlhf_gym.envs.memory import DialogueMemoryEnv
from rlhf_gym.memory.plan import distance_bucket, load_episodes, memory_correct, mentions, normalize

ENV = "rlhf_gym/DialogueMemory-v0"


def test_normalizer_cases():
    assert normalize("It's MARCH 14th!") == "it s march 14"
    assert normalize("  Zoë,   in   São-Paulo ") == "zoe in sao paulo"
    assert mentions("your dog is called biscuit!!", "Biscuit")
    assert mentions("On march 14th I think", "March 14")
    assert mentions("A TABLE-TENNIS fan", "table tennis")
    assert not mentions("Maxwell is here", "Max")       # whole words only
    assert not mentions("Hi", "")


def test_stale_value_after_update_scores_zero():
    assert memory_correct("It's Max now.", "Max", stale="Biscuit")
    assert not memory_correct("It's Biscuit.", "Max", stale="Biscuit")
    assert not memory_correct("Max or Biscuit?", "Max", stale="Biscuit")  # hedging both scores 0
    # and through the env: at an updated probe the old value gets no memory bonus
    env = DialogueMemoryEnv(split="test", reward_model="chrf")
    index, fact = next((i, f) for i, ep in enumerate(env.examples) for f in ep.facts if f.updated)
    env.reset(options={"index": index})
    for t in range(fact.probe):
        env.step("ok")
    _, reward, _, _, info = env.step(f"It is {fact.first_value}.")
    assert info["is_probe"] and info["updated"] and info["memory_correct"] == 0.0 and info["memory_bonus"] == 0.0
    env.reset(options={"index": index})
    for t in range(fact.probe):
        env.step("ok")
    _, reward, _, _, info = env.step(f"It is {fact.value}.")
    assert info["memory_correct"] == 1.0 and info["memory_bonus"] == pytest.approx(env.memory_weight)
    assert reward == pytest.approx(info["score"] + env.memory_weight)


def test_episodes_deterministic_and_varied():
    episodes = load_episodes("test")
    assert len(episodes) > 100
    again = [ep.to_json() for ep in load_episodes.__wrapped__("test")]
    assert again == [ep.to_json() for ep in episodes]
    facts = [f for ep in episodes for f in ep.facts]
    for ep in episodes:
        assert 6 <= ep.n_turns <= 12
        assert len(set(ep.probe_at)) == len(ep.facts)
        for f in ep.facts:
            assert f.distance >= 1 and f.plant < f.probe and (f.update is None or f.plant < f.update < f.probe)
            assert mentions(ep.partner[f.update if f.updated else f.plant], f.value)
            assert not mentions(ep.partner[f.probe].split("?")[-1], f.value)
            assert mentions(ep.references[f.probe], f.value)
    assert {distance_bucket(f.distance) for f in facts} == {"1-2", "3-5", "6-9", "10+"}
    assert 0.2 < np.mean([f.updated for f in facts]) < 0.6
    assert len({f.probe_text for f in facts}) > 40 and len({f.value for f in facts}) > 150
    # test conversations are the Dialogue task's test conversations
    from rlhf_gym.tasks import get_task

    dialogue_ids = {ex.id.rsplit(":", 1)[0] for ex in get_task("rlhf_gym/Dialogue-v1").examples("test")}
    assert {ep.id for ep in episodes} <= dialogue_ids


def test_seeded_reset_and_steps_are_deterministic():
    a, b = gym.make(ENV, split="test", reward_model="chrf"), gym.make(ENV, split="test", reward_model="chrf")
    obs_a, info_a = a.reset(seed=7)
    obs_b, info_b = b.reset(seed=7)
    assert obs_a == obs_b and info_a["example_id"] == info_b["example_id"]
    assert obs_a.endswith("\nB:") and obs_a.startswith("Topic:")
    for t in range(3):
        ra, rb = a.step("I see, tell me more."), b.step("I see, tell me more.")
        assert ra[0] == rb[0] and ra[1] == rb[1]
    assert gym.make(ENV, split="test", reward_model="chrf").reset(seed=8)[1]["example_id"] != info_a["example_id"] \
        or gym.make(ENV, split="test", reward_model="chrf").reset(seed=9)[1]["example_id"] != info_a["example_id"]


def test_check_env_clean():
    env = gym.make(ENV, split="test", reward_model="chrf")
    check_env(env.unwrapped)


def test_observation_keeps_whole_history():
    env = DialogueMemoryEnv(split="test", reward_model="chrf")
    obs, info = env.reset(options={"index": 3})
    ep = env.examples[3]
    replies = [f"reply number {t}" for t in range(ep.n_turns)]
    for t in range(ep.n_turns - 1):
        obs, *_ = env.step(replies[t])
    for t in range(ep.n_turns - 1):  # every earlier turn, partner and agent, is still in view
        assert f"A: {ep.partner[t]}\nB: {replies[t]}" in obs
    assert info["turn_references"] == ep.references and len(info["probes"]) == len(ep.facts)


def test_bench_oracle_and_echo(tmp_path):
    from rlhf_gym.evaluation import run_bench

    for agent, low, high in (("reference", 0.95, 1.0), ("lead", 0.0, 0.3)):
        results = run_bench(agent, [ENV], limit=4, reward="chrf", out=tmp_path / f"{agent}.json", show_progress=False)
        block = results["envs"][ENV]
        acc = block["metrics"]["memory_accuracy"]
        assert low <= acc["mean"] <= high, (agent, acc)
        probes = [g for g in block["generations"] if g["is_probe"]]
        assert acc["n"] == len(probes) == block["n_probes"] >= 8
        assert acc["count"] == sum(g["memory_correct"] == 1.0 for g in probes)
        total = sum(block["metrics"]["memory_by_distance"][b]["n"] for b in ("1-2", "3-5", "6-9", "10+"))
        assert total == acc["n"]
        non_probe = [g["score"] for g in block["generations"] if not g["is_probe"]]
        assert block["metrics"]["score_non_probe"]["mean"] == pytest.approx(np.mean(non_probe))


def test_vector_env_matches_single_envs():
    venv = gym.make_vec(ENV, num_envs=2, split="test", reward_model="chrf")
    singles = [gym.make(ENV, split="test", reward_model="chrf") for _ in range(2)]
    obs, info = venv.reset(seed=[3, 4])
    expected = [env.reset(seed=s)[0] for env, s in zip(singles, (3, 4))]
    assert list(obs) == expected
    for _ in range(2):
        obs, reward, term, trunc, info = venv.step(["Nice, and you?", "Cool."])
        want = [env.step(a) for env, a in zip(singles, ["Nice, and you?", "Cool."])]
        assert list(obs) == [w[0] for w in want] and list(reward) == [w[1] for w in want]
    venv.close()


def test_bad_action_is_a_clear_error():
    env = DialogueMemoryEnv(split="test", reward_model="chrf")
    with pytest.raises(RuntimeError, match="reset"):
        env.step("hi")
    env.reset(options={"index": 0})
    with pytest.raises(TypeError, match="must be a str"):
        env.step(3)
    with pytest.raises(ValueError, match="over this env's limit"):
        env.step("x" * 1000)
