"""PPO/RLOO on the multi-turn DialogueMemory env: episodes played with the policy's own replies,
each trained turn one bandit sample (tiny GPT-2 from test_ppo, a rule-based reward: seconds)."""

import json

import numpy as np
import pytest
import torch

from rlhf_gym.envs.memory import DialogueMemoryEnv
from rlhf_gym.memory.plan import load_episodes
from rlhf_gym.memory.view import parse_history_view, rewrite_observation
from rlhf_gym.policy import load_policy
from rlhf_gym.ppo.config import make_config
from rlhf_gym.ppo.multiturn import EpisodePool, collect_turns, select_turns
from rlhf_gym.ppo.trainer import train
from test_ppo import REWARD, make_policy

ENV = "rlhf_gym/DialogueMemory-v0"


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return make_policy(tmp_path_factory.mktemp("policy") / "tiny")


def mt_cfg(policy_dir, out, **kw):
    base = dict(algo="rloo", env_id=ENV, split="validation", policy=str(policy_dir), out=str(out), iterations=2,
                batch_size=8, mini_batch_size=4, rloo_k=2, turns_per_episode=2, lr=1e-2, progress=False,
                plot=False, save_every=1, history_view="window:2")
    return make_config("cpu-tiny", **{**base, **kw})


def test_select_turns_takes_probes_first():
    rng = np.random.default_rng(0)
    assert select_turns([5, 8, 4], 9, 2, rng) in ([4, 5], [4, 8], [5, 8])
    picked = select_turns([5, 8], 9, 4, rng)
    assert {5, 8} <= set(picked) and len(set(picked)) == 4 and all(0 <= t < 9 for t in picked)
    with pytest.raises(ValueError, match="only 9 agent turns"):
        select_turns([5], 9, 10, rng)


def test_branch_scores_independently():
    env = DialogueMemoryEnv("validation", reward_model=REWARD)
    env.reset(options={"index": 0})
    twin = env.branch()
    _, _, _, _, info_twin = twin.step("é é é")
    assert env._turn == 0 and twin._turn == 1 and len(env._turns) == 1  # the original did not move
    _, _, _, _, info = env.step("plain")
    assert info["score"] == 0.0 and info_twin["score"] > 0.5


def test_collect_turns_groups_k_replies_per_trained_turn(policy_dir):
    model, tok, meta = load_policy(policy_dir)
    pool = EpisodePool(ENV, num_envs=12, n_episodes=2, split="validation", reward_model=REWARD)
    torch.manual_seed(0)
    ro = collect_turns(model, tok, meta, pool, [0, 1], k=3, turns_per_episode=2, view=lambda o: o,
                       max_new_tokens=4, temperature=1.0, rng=np.random.default_rng(0))
    assert ro.query.shape[0] == ro.response.shape[0] == len(ro.texts) == 12
    ids = ro.example_ids
    for g in range(4):  # each group of 3 answers the same turn of the same episode, same observation
        assert len(set(ids[3 * g:3 * g + 3])) == 1 and len(set(ro.prompts[3 * g:3 * g + 3])) == 1
    assert len(set(ids)) == 4
    episodes = load_episodes("validation")
    for example_turn in ids[::3]:
        conv, turn = example_turn.rsplit("#", 1)
        ep = next(e for e in episodes[:2] if e.id == conv)
        n_probes = len(ep.probe_at)
        # both trained turns are probes when the episode has >= 2 (all have 2 or 3)
        assert n_probes >= 2 and int(turn) in ep.probe_at
    assert np.all(ro.components["is_probe"] == 1.0)
    # the observation a later trained turn saw holds the policy's own earlier replies, not the real ones
    assert torch.all(ro.query_mask.sum(1) > 0) and torch.all(ro.response_mask.sum(1) > 0)
    # rewards are the env's: the callable reward plus the memory bonus
    assert np.allclose(ro.raw_scores.numpy(), ro.components["score"] + ro.components["memory_bonus"], atol=1e-5)


def test_human_history_replies_generate_only_the_trained_turns(policy_dir):
    """history_replies="human": earlier turns carry the conversation's real replies, and the trained
    probe turns are the only generated ones; memory_weight sets the training reward's bonus."""
    model, tok, meta = load_policy(policy_dir)
    pool = EpisodePool(ENV, num_envs=4, n_episodes=2, split="validation", reward_model=REWARD, memory_weight=7.5)
    calls = []
    import rlhf_gym.ppo.multiturn as mt

    real_sample = mt.sample

    def counting_sample(*args, **kwargs):  # the real sampler, counted
        calls.append(len(args[3]))
        return real_sample(*args, **kwargs)

    mt.sample = counting_sample
    try:
        torch.manual_seed(0)
        ro = collect_turns(model, tok, meta, pool, [0, 1], k=2, turns_per_episode=1, view=lambda o: o,
                           max_new_tokens=4, temperature=1.0, rng=np.random.default_rng(0),
                           history_replies="human")
    finally:
        mt.sample = real_sample
    assert len(ro.texts) == 4 and sum(calls) == 4  # 2 episodes x 1 trained turn x k=2, nothing else generated
    episodes = load_episodes("validation")
    for g in range(2):
        conv, turn = ro.example_ids[2 * g].rsplit("#", 1)
        ep = next(e for e in episodes[:2] if e.id == conv)
        # every earlier agent turn of the observation is the real human reply
        for t in range(int(turn)):
            assert ep.real_replies[t].strip()[:40] in ro.prompts[2 * g]
    bonus = ro.components["memory_bonus"]
    assert set(np.round(bonus, 6)) <= {0.0, 7.5}
    assert np.allclose(bonus, 7.5 * ro.components["memory_correct"])
    with pytest.raises(ValueError, match="history_replies"):
        make_config("cpu-tiny", history_replies="oracle")


def test_rloo_multi_turn_runs_and_resumes(policy_dir, tmp_path):
    before = {k: v.clone() for k, v in load_policy(policy_dir)[0].state_dict().items()}
    history = train(mt_cfg(policy_dir, tmp_path / "r"), reward_model=REWARD)
    assert len(history) == 2 and history[0]["kl"] == 0.0
    assert all(np.isfinite(h["policy_loss"]) for h in history)
    assert all(0.0 <= h["memory_accuracy"] <= 1.0 and h["n_probe_samples"] == 8 for h in history)
    after = load_policy(tmp_path / "r")[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(x) for x in (tmp_path / "r" / "samples.jsonl").read_text().splitlines()]
    assert rows and all("#" in r["example_id"] for r in rows)
    resumed = train(mt_cfg(policy_dir, tmp_path / "r", iterations=3, resume=True), reward_model=REWARD)
    assert [h["iteration"] for h in resumed] == [1, 2, 3]


def test_ppo_multi_turn_with_ordinary_turns(policy_dir, tmp_path):
    history = train(mt_cfg(policy_dir, tmp_path / "p", algo="ppo", turns_per_episode=4, batch_size=8,
                           iterations=1, ppo_epochs=1), reward_model=REWARD)
    h = history[0]
    assert np.isfinite(h["value_loss"]) and 4 <= h["n_probe_samples"] <= 6 and "score_non_probe" in h


def test_multi_turn_config_errors(policy_dir, tmp_path):
    with pytest.raises(ValueError, match="history_view"):
        make_config("cpu-tiny", history_view="window:0")
    with pytest.raises(ValueError, match="turns_per_episode x k"):
        train(mt_cfg(policy_dir, tmp_path / "e", batch_size=12, mini_batch_size=4, rloo_k=2, turns_per_episode=4),
              reward_model=REWARD)
    assert not (tmp_path / "e" / "checkpoint").exists()


def test_history_views_match_the_bench_agents():
    env = DialogueMemoryEnv("validation", reward_model=REWARD)
    obs, _ = env.reset(options={"index": 0})
    for _ in range(3):
        obs, *_ = env.step("ok")
    assert parse_history_view("full") is None and parse_history_view("memory:4") == (4, True)
    window = rewrite_observation(obs, 2)
    assert window.endswith("\nB:") and window.count("\nA:") + window.count("\nB:") == 3
    assert "What A has told you" in rewrite_observation(obs, 4, facts=True)


@pytest.mark.slow
def test_rloo_multi_turn_learns(tmp_path):
    """The toy reward (share of non-ASCII characters) through the memory env, every trained turn a
    sample: the per-turn reward must rise, as on the single-turn toy task."""
    policy = make_policy(tmp_path / "p")
    history = train(mt_cfg(policy, tmp_path / "learn", iterations=15, batch_size=32, mini_batch_size=16, rloo_k=4,
                           turns_per_episode=2, kl_coef=0.01, missing_eos_penalty=0.0, save_every=100),
                    reward_model=REWARD)
    start = sum(h["score_mean"] for h in history[:2]) / 2
    end = sum(h["score_mean"] for h in history[-3:]) / 3
    assert start < 0.25 and end >= 0.3, (start, end)


def test_compare_script_pairs_probes_and_refuses_test_for_selection(tmp_path):
    """On the committed n=16 test files: the paired change in memory accuracy equals the difference
    of the two accuracies (same probes), and --select refuses test files."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("memory_rl_compare", root / "baselines" / "memory_rl_compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    window, memory = (str(root / "baselines" / "memory" / "n16" / f"{a}.json") for a in ("smollm2-window", "smollm2-memory"))
    (_, before), (_, after) = compare.block(window), compare.block(memory)
    stats = compare.paired(before, after, probes=True)
    expected = after["metrics"]["memory_accuracy"]["mean"] - before["metrics"]["memory_accuracy"]["mean"]
    assert stats["n"] == before["n_probes"] and abs(stats["mean_gap"] - expected) < 1e-12
    assert compare.main([window, memory, "--md", str(tmp_path / "t.md")]) == 0
    assert "paired change" in (tmp_path / "t.md").read_text()
    with pytest.raises(ValueError, match="validation"):
        compare.select([memory])


def test_memory_rl_compare_counts_copies():
    """The copy counts of baselines/memory_rl_compare.py, on a hand-made episode whose answers are
    known: a store-sentence copy, a partner copy (6+ words), a real answer and an ordinary copy."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("memory_rl_compare", root / "baselines" / "memory_rl_compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)

    def turn(t, partner, reply, probe=False, correct=None):
        return {"id": "e1", "turn": t, "partner": partner, "prediction": reply, "is_probe": probe,
                "memory_correct": correct}

    block = {"generations": [
        turn(0, "Hi! My dog is called Rex and I love long walks on the beach.", "Nice to meet you."),
        turn(1, "What was my dog called again?", "A's dog is called Rex.", True, 1.0),  # store sentence
        turn(2, "Tell me what my dog is called.", "I love long walks on the beach too", True, 0.0),  # partner run
        turn(3, "And my dog?", "Your dog is Rex!", True, 1.0),  # an answer, no copy
        turn(4, "Ok bye.", "What A has told you so far (the latest is right): nothing"),  # store header
    ]}
    counts = compare.copies(block)
    assert counts["probe"] == {"n": 3, "store": 1, "partner": 1}
    assert counts["correct_probe"] == {"n": 2, "store": 1, "partner": 0}
    assert counts["ordinary"] == {"n": 2, "store": 1, "partner": 0}
    assert "1/3 probe" in compare.copy_line("x", block)
    block["generations"][1]["distance"] = 1
    block["generations"][3]["distance"] = 3
    for r in block["generations"]:
        r["answer"] = "Rex"
    rows = compare.correct_probe_sources(block)
    assert [(r["turn"], r["copied_turns_back"]) for r in rows] == [(1, []), (3, [])]
    block["generations"][3]["prediction"] = "My dog is called Rex and I love it"  # 6 words of turn 0
    assert compare.correct_probe_sources(block)[1]["copied_turns_back"] == [3]
