"""DialogueMemory-v0/v1: determinism, check_env, scoring rule, oracle/echo through bench, vector env.

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
from rlhf_gym.memory.plan import distance_bucket, load_episodes, memory_correct, memory_score, mentions, normalize

ENV = "rlhf_gym/DialogueMemory-v0"
ENV_V1 = "rlhf_gym/DialogueMemory-v1"


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


def test_v1_rule_components():
    # computed by hand: the answer named, another fact's value named too
    parts = memory_score("Your dog is Max and you live in Lisbon.", "Max", None, ["Lisbon", "Kyoto"], version=1)
    assert parts == {"names_answer": True, "names_stale": False, "other_values_named": ["Lisbon"],
                     "memory_correct_v0": True, "memory_correct": False}
    assert memory_score("Your dog is Max and you live in Lisbon.", "Max", None, ["Lisbon"], version=0)[
        "memory_correct"]
    assert memory_score("It's Max now.", "Max", "Biscuit", ["Lisbon"], version=1)["memory_correct"]
    assert not memory_score("Max, not Biscuit.", "Max", "Biscuit", [], version=1)["memory_correct"]
    # an other value inside the answer's own words is not held against it
    assert memory_score("You live in New York.", "New York", None, ["York"], version=1)["memory_correct"]
    with pytest.raises(ValueError, match="unknown memory rule version"):
        memory_score("x", "Max", version=2)


def _play_to_probe(env, index, fact, view=None):
    obs, _ = env.reset(options={"index": index})
    for t in range(fact.probe):
        obs, *_ = env.step("ok")
    return obs


def test_store_dump_scores_one_on_v0_and_zero_on_v1():
    """The reward hack of the v0 RLOO run: copy the prompt's fact-store line into the probe reply."""
    from rlhf_gym.memory.view import rewrite_observation

    v0 = gym.make(ENV, split="test", reward_model="chrf").unwrapped
    v1 = gym.make(ENV_V1, split="test", reward_model="chrf").unwrapped
    assert (v0.version, v1.version) == (0, 1)
    checked = 0
    for index, ep in enumerate(v0.examples[:20]):
        for k, fact in enumerate(ep.facts):
            if not ep.other_values(k, fact.probe):
                continue  # nothing else stated yet: a dump is just the answer
            obs = _play_to_probe(v0, index, fact)
            assert _play_to_probe(v1, index, fact) == obs
            store = rewrite_observation(obs, turns=4, facts=True).split("\n")[1]
            assert store.startswith("What A has told you so far")
            dump = store[:300]
            info0, info1 = v0.step(dump)[4], v1.step(dump)[4]
            if info0["memory_correct"] != 1.0:
                continue  # the extractor missed the value or it was cut at 300 characters
            assert info1["memory_correct"] == 0.0 and info1["memory_correct_v0"] == 1.0
            assert info1["other_values_named"] and info1["n_other_values_named"] == len(info1["other_values_named"])
            assert info1["memory_bonus"] == 0.0 and info0["memory_bonus"] == pytest.approx(v0.memory_weight)
            assert set(info1["other_values_named"]) <= set(ep.other_values(k, fact.probe))
            checked += 1
    assert checked >= 5


def test_v1_oracle_scores_every_probe():
    env = gym.make(ENV_V1, split="test", reward_model="chrf").unwrapped
    n = 0
    for index, ep in enumerate(env.examples[:10]):
        env.reset(options={"index": index})
        for t in range(ep.n_turns):
            info = env.step(ep.references[t][: env.task.max_response_chars])[4]  # as bench cuts it
            if info["is_probe"]:
                assert info["memory_correct"] == 1.0 and info["other_values_named"] == [], (ep.id, t)
                n += 1
    assert n >= 20


def test_unknown_version_is_a_clear_error():
    from rlhf_gym.envs.memory import memory_env_version

    assert memory_env_version("DialogueMemory-v1") == 1 and memory_env_version(ENV) == 0
    with pytest.raises(ValueError, match="known: rlhf_gym/DialogueMemory-v0, rlhf_gym/DialogueMemory-v1"):
        memory_env_version("rlhf_gym/DialogueMemory-v7")
    with pytest.raises(ValueError, match="unknown DialogueMemory version"):
        DialogueMemoryEnv(split="test", reward_model="chrf", version=3)


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


@pytest.mark.parametrize("env_id", [ENV, ENV_V1])
def test_check_env_clean(env_id):
    env = gym.make(env_id, split="test", reward_model="chrf")
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


@pytest.mark.parametrize("env_id", [ENV, ENV_V1])
def test_bench_oracle_and_echo(tmp_path, env_id):
    from rlhf_gym.evaluation import run_bench

    for agent, low, high in (("reference", 0.95, 1.0), ("lead", 0.0, 0.3)):
        results = run_bench(agent, [env_id], limit=4, reward="chrf", out=tmp_path / f"{agent}.json",
                            show_progress=False)
        block = results["envs"][env_id]
        assert block["env_id"] == env_id and block["version"] == int(env_id[-1])
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
