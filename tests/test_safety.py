"""The safety check: the profanity classifier by default, the blocklist as an option, one callable
convention (prompts, responses, references) checked when the env is built, and the unsafe-output
rate that bench reports for every env."""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlhf_gym.rewards.base import CallableReward
from rlhf_gym.rewards.safety import (CLASSIFIER_THRESHOLD, DEFAULT_BLOCKLIST, BlocklistCheck, ProfanityClassifier,
                                     load_safety_check)

REPLIES = [json.loads(line) for line in (Path(__file__).parent / "data" / "safety_replies.jsonl").read_text().splitlines()]
ABUSIVE = [r["text"] for r in REPLIES if r["label"] == "abusive"]
BENIGN = [r["text"] for r in REPLIES if r["label"] == "benign"]
# Measured with alt-profanity-check==1.9.1 at its own decision boundary (p >= 0.5) and documented in
# envs/REWARD_MODELS.md ("Safety"); the model is pinned, so these are exact.
ABUSIVE_FLAGGED, BENIGN_PASSED = 17, 28


def _flags(check, texts):
    return check([""] * len(texts), texts, None) >= check.threshold


def test_written_replies_hold_no_blocklisted_word_so_the_blocklist_flags_none_of_them():
    assert len(ABUSIVE) == 30 and len(BENIGN) == 30
    blocklist = BlocklistCheck()
    assert not _flags(blocklist, ABUSIVE).any() and not _flags(blocklist, BENIGN).any()
    assert _flags(blocklist, ["oh shit, sorry", "just kys"]).all()  # the check itself works


def test_classifier_flags_abusive_replies_without_listed_words_and_passes_benign_ones():
    check = load_safety_check()
    assert isinstance(check, ProfanityClassifier) and check.threshold == CLASSIFIER_THRESHOLD == 0.5
    abusive, benign = _flags(check, ABUSIVE), _flags(check, BENIGN)
    print(f"classifier: {abusive.sum()}/{len(ABUSIVE)} abusive flagged, {(~benign).sum()}/{len(BENIGN)} benign passed")
    assert int(abusive.sum()) == ABUSIVE_FLAGGED
    assert int((~benign).sum()) == BENIGN_PASSED
    # by construction of the set the blocklist flags 0 of the abusive replies
    assert abusive.sum() > 0.5 * len(ABUSIVE)


def test_classifier_probability_is_in_unit_interval_and_independent_of_batch_mates():
    check = load_safety_check("classifier")
    texts = ABUSIVE[:5] + BENIGN[:5] + ["", "神は天と地を創造された。"]
    batch = check([""] * len(texts), texts, None)
    one_by_one = np.array([check([""], [t], None)[0] for t in texts])
    assert batch.tolist() == one_by_one.tolist()
    assert ((batch >= 0) & (batch <= 1)).all()
    assert load_safety_check("classifier") is check  # loaded once per process


def test_combined_check_flags_what_either_part_flags():
    both = load_safety_check("classifier+blocklist")
    texts = ["just kys", ABUSIVE[0], BENIGN[0]]
    flags = _flags(both, texts).tolist()
    assert flags == [True, True, False]
    assert _flags(load_safety_check("classifier"), ["just kys"]).tolist() == [False]  # why the combination exists


def test_env_penalises_with_the_classifier_probability_by_default():
    env = gym.make("rlhf_gym/Dialogue-v0", reward_model=CallableReward(lambda p, r: 1.0), safety_coef=2.0)
    prob = load_safety_check()([""], [ABUSIVE[0]], None)[0]
    env.reset(seed=0)
    _, reward, *_, info = env.step(ABUSIVE[0])
    assert info["unsafe"] == prob and info["unsafe_flagged"] == 1.0
    assert reward == pytest.approx(1.0 - 2.0 * prob)
    env.reset(seed=0)
    _, reward, *_, info = env.step(BENIGN[0])
    assert info["unsafe_flagged"] == 0.0 and reward > 1.0 - 2.0 * 0.5


def test_one_convention_checked_when_the_env_is_built():
    per_response = lambda text: 0.0  # noqa: E731 - the old convention
    for coef in (1.0, 0.0):
        with pytest.raises(TypeError, match=r"\(prompts, responses, references\)"):
            gym.make("rlhf_gym/Dialogue-v0", reward_model=CallableReward(lambda p, r: 1.0), safety_coef=coef,
                     safety_check=per_response)
    with pytest.raises(ValueError, match="unknown safety check 'profanity'"):
        gym.make("rlhf_gym/Dialogue-v0", reward_model=CallableReward(lambda p, r: 1.0), safety_coef=1.0,
                 safety_check="profanity")

    def shouty(prompts, responses, references):
        return [1.0 if r.isupper() else 0.0 for r in responses]

    env = gym.make("rlhf_gym/Dialogue-v0", reward_model=CallableReward(lambda p, r: 1.0), safety_coef=1.0,
                   safety_check=shouty)
    env.reset(seed=0)
    assert env.step("STOP IT")[1] == 0.0

    env = gym.make("rlhf_gym/Dialogue-v0", reward_model=CallableReward(lambda p, r: 1.0), safety_coef=1.0,
                   safety_check=lambda prompts, responses, references: [2.0] * len(responses))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        env.step("hello")


def test_blocklist_default_words_are_the_documented_list():
    assert BlocklistCheck().words == DEFAULT_BLOCKLIST and BlocklistCheck().name == "blocklist"


def test_score_predictions_reports_the_unsafe_rate_with_ci_without_a_penalty(tiny_task):
    from rlhf_gym.evaluation import score_predictions
    from rlhf_gym.metrics import wilson_interval

    examples = tiny_task.examples("test")
    hyps = [ABUSIVE[i] if i % 2 == 0 else BENIGN[i] for i in range(len(examples))]
    block = score_predictions(tiny_task.env_id, [{"id": ex.id, "prediction": h} for ex, h in zip(examples, hyps)])
    rate = block["metrics"]["unsafe_rate"]
    expected = int(_flags(load_safety_check(), hyps).sum())
    assert (rate["n"], rate["count"]) == (len(hyps), expected) and expected >= 1
    assert (rate["ci_low"], rate["ci_high"]) == pytest.approx(wilson_interval(expected, len(hyps)))
    assert block["metrics"]["unsafe_rate_reference"]["count"] == 0
    assert block["safety_check"]["name"] == "profanity-check:linear-svm" and block["safety_coef"] == 0.0
    from rlhf_gym.rewards.safety import unsafe_rate

    blocklist = unsafe_rate(load_safety_check("blocklist"), [""] * len(hyps), hyps)
    assert blocklist["count"] == 0 and blocklist["check"] == "blocklist" and blocklist["n"] == len(hyps)


def test_trainers_log_the_unsafe_fraction_penalised_or_not():
    """PPO/RLOO log ``unsafe_fraction`` every iteration: the env's flags when it penalises, else the
    default classifier on the rollout's texts (so an unpenalised run still shows it)."""
    from rlhf_gym.ppo.trainer import _unsafe_fraction

    texts = [ABUSIVE[0], BENIGN[0], BENIGN[1], BENIGN[2]]
    expected = float(_flags(load_safety_check(), texts).mean())
    assert _unsafe_fraction({"score": np.zeros(4)}, [""] * 4, texts) == expected == 0.25
    # penalised: the env's own flags are used as they are (here a check that flags everything)
    assert _unsafe_fraction({"unsafe_flagged": np.ones(4)}, [""] * 4, texts) == 1.0
