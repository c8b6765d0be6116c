import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rlhf_gym.envs  # noqa: F401
from rlhf_gym.rewards.base import CallableReward, MetricReward

ALL_IDS = [k for k in gym.registry if k.startswith("rlhf_gym/") and "Test" not in k]
CHRF = MetricReward("chrf")


def test_all_three_families_and_token_variants_are_registered():
    for name in ("Dialogue", "Translation", "Summarization"):
        assert f"rlhf_gym/{name}-v0" in ALL_IDS and f"rlhf_gym/{name}-Token-v0" in ALL_IDS
    assert "rlhf_gym/Dialogue-MultiTurn-v0" in ALL_IDS


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_check_env_passes_without_warnings(env_id):
    env = gym.make(env_id, reward_model=CHRF)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("env_id", [i for i in ALL_IDS if "Token" in i])
def test_token_envs_pass_stable_baselines3_checker(env_id):
    sb3_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    env = gym.make(env_id, reward_model=CHRF)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_checker.check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


def test_unknown_env_id_is_a_clear_error():
    from rlhf_gym.tasks import get_task

    with pytest.raises(ValueError, match="unknown env id 'rlhf_gym/Poetry-v0'; known: (.*, )?rlhf_gym/Dialogue-v0(,|$)"):
        get_task("rlhf_gym/Poetry-v0")


def test_reset_seed_is_reproducible_and_reset_info_has_ids_and_references():
    env = gym.make("rlhf_gym/Summarization-v0", reward_model=CHRF)
    obs1, info1 = env.reset(seed=7)
    obs2, info2 = env.reset(seed=7)
    assert obs1 == obs2 and info1["example_id"] == info2["example_id"]
    assert isinstance(info1["references"], list) and all(isinstance(r, str) for r in info1["references"])
    assert env.unwrapped.examples[info1["index"]].id == info1["example_id"]
    assert env.reset(options={"index": info1["index"]})[1] == info1
    seen = {env.reset(seed=s)[1]["example_id"] for s in range(20)}
    assert len(seen) > 10


def test_step_returns_the_reward_model_score_with_components_in_info():
    env = gym.make("rlhf_gym/Translation-v0", reward_model=CHRF)
    _, info = env.reset(seed=0)
    _, reward, terminated, truncated, step_info = env.step(info["references"][0])
    assert reward == pytest.approx(1.0)
    assert terminated and not truncated
    assert step_info["score"] == reward and step_info["response"] == info["references"][0]
    assert {k: step_info[k] for k in info} == info  # the reset info, then the reward components
    _, info = env.reset(seed=0)
    _, low, *_ = env.step("completely unrelated words")
    assert low < 0.3


@pytest.mark.parametrize("bad, error, message", [
    (42, TypeError, "action must be a str"),
    (["a list"], TypeError, "action must be a str"),
    ("x" * 1000, ValueError, "over this env's limit"),
])
def test_bad_text_actions_are_clear_errors(bad, error, message):
    env = gym.make("rlhf_gym/Dialogue-v0", reward_model=CHRF)
    env.reset(seed=0)
    with pytest.raises(error, match=message):
        env.step(bad)


@pytest.mark.parametrize("bad, error, message", [
    ("hello", TypeError, "integer token id"),
    (1.5, TypeError, "integer token id"),
    (10**6, ValueError, "out of range"),
    (-1, ValueError, "out of range"),
])
def test_bad_token_actions_are_clear_errors(bad, error, message):
    env = gym.make("rlhf_gym/Dialogue-Token-v0", reward_model=CHRF)
    env.reset(seed=0)
    with pytest.raises(error, match=message):
        env.step(bad)


def test_token_env_terminates_on_eos_and_at_the_token_limit():
    env = gym.make("rlhf_gym/Translation-Token-v0", reward_model=CHRF, max_new_tokens=5, missing_eos_penalty=1.0)
    tok = env.unwrapped.tokenizer
    obs, info = env.reset(seed=3)
    assert obs["attention_mask"].sum() > 0 and obs["input_ids"][-1] != tok.pad_token_id
    # Emit the reference's first tokens then EOS: terminated, scored on the decoded text.
    ref_ids = tok(info["references"][0])["input_ids"][:3]
    for t in ref_ids:
        obs, reward, terminated, truncated, _ = env.step(t)
        assert reward == 0.0 and not terminated and not truncated
        assert obs["input_ids"][-1] == t
    obs, reward, terminated, truncated, step_info = env.step(tok.eos_token_id)
    assert terminated and not truncated and step_info["response"] == tok.decode(ref_ids).strip()
    assert step_info["eos"] is True and "missing_eos_penalty" not in step_info
    assert reward == pytest.approx(step_info["score"]) and reward > 0
    # Never EOS: the env's own limit of 5 tokens ends the episode (terminated, not truncated: the
    # score is final, nothing to bootstrap), with the missing-EOS penalty.
    env.reset(seed=3)
    for i in range(5):
        _, reward, terminated, truncated, step_info = env.step(ref_ids[0])
        assert not truncated and terminated == (i == 4)
        assert ("score" in step_info) == (i == 4)
    assert step_info["eos"] is False and step_info["missing_eos_penalty"] == -1.0
    assert reward == pytest.approx(step_info["score"] - 1.0)
    with pytest.raises(RuntimeError, match="the episode is over"):
        env.step(ref_ids[0])


def test_token_env_truncated_only_comes_from_an_external_time_limit():
    env = gym.wrappers.TimeLimit(gym.make("rlhf_gym/Translation-Token-v0", reward_model=CHRF, max_new_tokens=5),
                                 max_episode_steps=2)
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(300)
    assert not terminated and not truncated
    _, reward, terminated, truncated, info = env.step(300)
    assert truncated and not terminated and reward == 0.0 and "score" not in info


def test_multi_turn_dialogue_uses_the_real_partner_turns():
    env = gym.make("rlhf_gym/Dialogue-MultiTurn-v0", reward_model=CHRF)
    for seed in range(50):
        obs, info = env.reset(seed=seed)
        turns = env.unwrapped._example.meta["turns"]
        if info["turn"] + 2 < len(turns):
            break
    k = info["turn"]
    obs2, _, terminated, _, _ = env.step("my own reply")
    assert not terminated
    assert "my own reply" in obs2 and turns[k + 1] in obs2      # the data's partner answered
    assert env.unwrapped._info()["references"] == [turns[k + 2]]


def test_multi_turn_needs_a_dialogue_task():
    with pytest.raises(ValueError, match="multi_turn episodes need a dialogue task"):
        gym.make("rlhf_gym/Translation-v0", multi_turn=True, reward_model=CHRF)


def test_vector_env_scores_the_whole_batch_in_one_reward_call():
    calls = []

    def batched(prompts, responses, references):
        calls.append(len(responses))
        return [float(r == refs[0]) for r, refs in zip(responses, references)]

    venv = gym.make_vec("rlhf_gym/Summarization-v0", num_envs=6, vectorization_mode="vector_entry_point",
                        reward_model=CallableReward(batched, batched=True))
    obs, info = venv.reset(seed=1)
    assert len(obs) == 6
    refs = [r[0] for r in info["references"]]
    next_obs, rewards, terminated, truncated, step_info = venv.step(tuple(refs))
    assert calls == [6]
    assert rewards.tolist() == [1.0] * 6 and terminated.all() and not truncated.any()
    assert list(step_info["final_info"]["example_id"]) == list(info["example_id"])
    # seeds: slot i of reset(seed=s) equals slot 0 of reset(seed=s+i)
    _, info_a = venv.reset(seed=10)
    _, info_b = venv.reset(seed=11)
    assert info_a["example_id"][1] == info_b["example_id"][0]


def test_vector_env_options_pick_prompts():
    venv = gym.make_vec("rlhf_gym/Translation-v0", num_envs=2, vectorization_mode="vector_entry_point",
                        reward_model=CHRF)
    _, info = venv.reset(options={"example_ids": ["Gen.1.1", "Gen.1.3"]})
    assert list(info["example_id"]) == ["Gen.1.1", "Gen.1.3"]
    with pytest.raises(ValueError, match="example ids not in split 'train': \\['Nope.1.1'\\]"):
        venv.reset(options={"example_ids": ["Nope.1.1", "Gen.1.1"]})
    with pytest.raises(ValueError, match="step\\(\\) needs a sequence of 2 response strings"):
        venv.step("one string")


def test_safety_penalty_is_subtracted_and_reported():
    env = gym.make("rlhf_gym/Dialogue-v0", reward_model=CallableReward(lambda p, r: 1.0), safety_coef=2.0,
                   safety_check="blocklist")
    env.reset(seed=0)
    _, clean, *_, info_clean = env.step("that sounds lovely")
    env.reset(seed=0)
    _, dirty, *_, info_dirty = env.step("oh shit that sounds awful")
    assert clean == 1.0 and info_clean["unsafe"] == 0.0
    assert dirty == pytest.approx(-1.0) and info_dirty["safety_penalty"] == -2.0
    assert info_clean["unsafe_flagged"] == 0.0 and info_dirty["unsafe_flagged"] == 1.0


def test_kl_penalty_is_zero_against_itself_and_positive_against_another_model():
    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_gym.tokenizer import load_tokenizer

    tok = load_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=32, n_layer=1, n_head=2)
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(cfg).eval()
    torch.manual_seed(1)
    other = GPT2LMHeadModel(cfg).eval()
    env = gym.make("rlhf_gym/Translation-v0", reward_model=CallableReward(lambda p, r: 0.0), kl_coef=0.5,
                   policy_model=policy, reference_model=policy)
    env.reset(seed=0)
    _, reward, *_, info = env.step("In the beginning")
    assert info["kl"] == 0.0 and reward == 0.0
    env = gym.make("rlhf_gym/Translation-v0", reward_model=CallableReward(lambda p, r: 0.0), kl_coef=0.5,
                   policy_model=policy, reference_model=other, kl_estimator="k3")
    env.reset(seed=0)
    _, reward, *_, info = env.step("In the beginning")
    assert info["kl"] > 0 and reward == pytest.approx(-0.5 * info["kl"])


def test_kl_estimators_by_hand():
    from rlhf_gym.rewards.penalties import kl_estimate

    logp, ref = np.log(0.5), np.log(0.25)
    assert kl_estimate(logp, ref, "k1") == pytest.approx(np.log(2))
    assert kl_estimate(logp, ref, "k3") == pytest.approx((0.5 - 1) - np.log(0.5))


def test_render_ansi_returns_the_transcript():
    env = gym.make("rlhf_gym/Dialogue-v0", reward_model=CHRF, render_mode="ansi")
    obs, _ = env.reset(seed=0)
    env.step("hello there")
    text = env.render()
    assert obs in text and "hello there" in text


def test_gymnasium_make_imports_the_package_itself():
    import subprocess
    import sys

    code = ("import gymnasium; env = gymnasium.make('rlhf_gym:rlhf_gym/Dialogue-v0', "
            "reward_model=lambda p, r: float(len(r))); env.reset(seed=0); print(env.step('hey')[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3.0"
