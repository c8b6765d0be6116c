"""The source-padding agent (``padsrc``): on-topic padding of a varying, seeded amount."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

SOURCE_SENTENCES = ["Alpha rose by {i} points.", "Beta fell sharply.", "Gamma stayed flat.", "Delta was never measured.",
                    "Epsilon doubled in {i} days."]


@pytest.fixture
def source_task(tmp_path):
    """A JSONL task whose sources have five sentences (ROUGE-L judge, chrF reward: real metrics)."""
    from rlhf_gym.rewards.base import MetricReward
    from rlhf_gym.tasks import register_jsonl_task

    rows = []
    for i in range(60):
        source = " ".join(s.format(i=i) for s in SOURCE_SENTENCES)
        rows.append({"id": f"s{i}", "prompt": f"Summarize: {source}", "source": source,
                     "references": [f"Summary {i}: alpha up, beta down."], "split": "test" if i < 48 else "train"})
    path = tmp_path / "src.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return register_jsonl_task("PadSrcTest", path, kind="summarization", max_response_chars=120,
                               reward=lambda: MetricReward("chrf"), judge=lambda: MetricReward("rougeL"))


def _run(spec, task, examples, batch_size=32):
    from rlhf_gym.agents import make_agent
    from rlhf_gym.evaluation import generate

    return [r["prediction"] for r in generate(make_agent(spec, task), examples, batch_size=batch_size,
                                              show_progress=False)]


def test_padding_count_is_seeded_per_prompt_and_covers_zero_to_k():
    from rlhf_gym.agents import padding_count

    counts = [padding_count(0, f"id{i}", 3) for i in range(800)]
    spread = Counter(counts)
    assert set(spread) == {0, 1, 2, 3} and all(150 <= c <= 250 for c in spread.values())  # ~uniform (200 each)
    assert counts == [padding_count(0, f"id{i}", 3) for i in range(800)]  # a function of (seed, id) only
    assert counts != [padding_count(1, f"id{i}", 3) for i in range(800)]
    assert {padding_count(5, f"id{i}", 0) for i in range(50)} == {0}


def test_padsrc_appends_that_many_source_sentences_within_the_limit(source_task):
    from rlhf_gym.agents import padding_count

    examples = source_task.examples("test")
    padded = _run("padsrc", source_task, examples)
    assert padded == _run("padsrc", source_task, examples, batch_size=5)  # batching does not change it
    added_counts = []
    for ex, text in zip(examples, padded):
        ref = ex.references[0]
        assert text.startswith(ref) and len(text) <= source_task.max_response_chars
        extra = text[len(ref):].strip()
        sentences = [s.format(i=ex.id[1:]) for s in SOURCE_SENTENCES]
        # the added text is the source's first sentences, in order: each one fitted in the limit
        expected, want = ref, padding_count(0, ex.id, 3)
        for s in sentences:
            if want and len(f"{expected} {s}") <= source_task.max_response_chars:
                expected, want = f"{expected} {s}", want - 1
        assert text == expected
        added_counts.append(sum(s in extra for s in sentences))
    assert set(added_counts) == {0, 1, 2, 3}  # the padding varies, unpadded prompts included


def test_padsrc_options_and_base_spec(source_task):
    from rlhf_gym.agents import make_agent

    examples = source_task.examples("test")[:12]
    lead = _run("lead", source_task, examples)
    padded_lead = _run("padsrc:lead,max_extra=1,pad_seed=7", source_task, examples)
    for base, text, ex in zip(lead, padded_lead, examples):
        # lead-1 is the source's first sentence: the padder adds the next one, never repeats it
        assert text in (base, f"{base} {SOURCE_SENTENCES[1]}")
    assert _run("padsrc,max_extra=0", source_task, examples) == [ex.references[0] for ex in examples]
    agent = make_agent("padsrc:lead,max_extra=2", source_task)
    assert (agent.max_extra, agent.pad_seed, agent.base.name, agent.deterministic) == (2, 0, "lead", True)
    with pytest.raises(ValueError, match="max_extra"):
        make_agent("padsrc,max_extra=two", source_task)
    with pytest.raises(ValueError, match="max_extra must be >= 0"):
        make_agent("padsrc,max_extra=-1", source_task)


def test_lc_removes_the_gain_of_a_judge_that_rewards_padsrc_length(source_task):
    """With a judge that rewards every extra character (a verbose judge), padsrc's varying padding
    makes the raw win rate over its unpadded base rise well above 0.5 while the LC rate (the rate at
    equal length, identified because the padding varies and is sometimes 0) stays near 0.5."""
    from rlhf_gym import winrate

    examples = source_task.examples("test")
    base = [ex.references[0] for ex in examples]
    padded = _run("padsrc", source_task, examples)
    # verbose judge: length plus a small per-prompt quality term shared by both outputs
    quality = np.random.default_rng(0).normal(0, 5, len(examples))
    raw, lc = winrate.compare([len(p) + q for p, q in zip(padded, quality)], [len(b) + q for b, q in zip(base, quality)],
                              padded, base)
    assert raw["mean"] > 0.7
    assert abs(lc["mean"] - 0.5) < 0.1 and lc["ci_low"] <= 0.5 <= lc["ci_high"]


def test_paired_gain_matches_independent_fits_and_brackets_them():
    from rlhf_gym import winrate

    rng = np.random.default_rng(3)
    n = 120
    k = rng.integers(0, 4, n)  # padsrc's design: 0..3 extra sentences per prompt
    delta_a = k * 60.0 + (k > 0) * rng.integers(0, 30, n)  # the padded agent is longer by k sentences
    delta_b = np.zeros(n)  # its base ties the opponent's length
    prefs_b = (rng.random(n) < 0.5).astype(float)
    # a verbose judge: a padded output wins 85% of the time; unpadded (k = 0), A is B
    prefs_a = np.where(k > 0, (rng.random(n) < 0.85).astype(float), prefs_b)
    out = winrate.paired_gain(prefs_a, delta_a, prefs_b, delta_b)
    assert out["raw_gain"] == pytest.approx(prefs_a.mean() - prefs_b.mean())
    lc_a = winrate.fit_length_logistic(prefs_a, delta_a)["lc"]
    lc_b = winrate.fit_length_logistic(prefs_b, delta_b)["lc"]
    assert out["lc_gain"] == pytest.approx(lc_a - lc_b)
    assert out["raw_gain_ci"][0] <= out["raw_gain"] <= out["raw_gain_ci"][1]
    assert out["raw_gain_ci"][0] > 0.1  # the raw rate gains clearly
    assert out["lc_gain"] < out["raw_gain"] - 0.1 and out["lc_gain_ci"][0] < 0 < out["lc_gain_ci"][1]
    with pytest.raises(ValueError, match="one length"):
        winrate.paired_gain(prefs_a, delta_a, prefs_b[:-1], delta_b)
