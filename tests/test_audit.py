"""eval-rm: the corruption subsets, the counterfactual swaps, the sign test, and the audit end
to end on a registered task whose reward (chrF) and judge (ROUGE-L) are real metrics, checked
against scores computed independently with those metrics."""

import json
import math

import numpy as np
import pytest

from rlhf_gym.metrics import paired_gap_stats, sign_test
from rlhf_gym.rewards.audit import UNSAFE_SENTENCES, audit_reward, bias_pairs, build_pairs, swap_terms
from rlhf_gym.rewards.base import MetricReward
from rlhf_gym.rewards.preferences import split_vocabulary

REFS = [
    "He told her the truth about his mother and her plans.",
    "She thinks the American church near the river is beautiful.",
    "The weather was lovely so we walked for a long time.",
    "I would like to visit my grandmother next summer if possible.",
    "My brother said that Christians and Jews share many stories.",
    "Cooking pasta at home is cheaper than eating out every night.",
    "ok",
    "That sounds great, tell me more about the new job please.",
    # 138 characters, close to the task's limit of 150: no room to pad it or insert a sentence
    ("We spent the whole afternoon in the old library reading about ships, maps, storms and the long voyages of the "
     "sailors who crossed the sea."),
    "We watched a film about a king and his sons last night.",
]


@pytest.fixture(scope="module")
def audit_task(tmp_path_factory):
    from rlhf_gym.tasks import register_jsonl_task

    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    rows = [{"id": f"a{i}", "prompt": f"A: tell me something, number {i}\nB:", "references": [ref],
             "source": f"tell me something, number {i}", "split": "test"} for i, ref in enumerate(REFS)]
    rows += [{"id": f"t{i}", "prompt": "A: hi\nB:", "references": ["hello there friend"], "split": "train"}
             for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return register_jsonl_task("AuditToy", path, kind="dialogue", max_response_chars=150,
                               reward=lambda: MetricReward("chrf"), judge=lambda: MetricReward("rougeL"))


def test_sign_test_known_values_and_scipy():
    assert sign_test(1, 9) == pytest.approx(2 * 11 / 1024)  # P[X <= 1] = (1 + 10) / 2^10, two-sided
    assert sign_test(9, 1) == sign_test(1, 9)
    assert sign_test(5, 5) == 1.0
    assert sign_test(0, 20) == pytest.approx(2 / 2 ** 20)
    assert math.isnan(sign_test(0, 0))
    with pytest.raises(ValueError):
        sign_test(-1, 3)
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in ((3, 17), (40, 100), (0, 7), (250, 600)):
        assert sign_test(k, n - k) == pytest.approx(scipy_stats.binomtest(k, n, 0.5).pvalue, rel=1e-9)


def test_paired_gap_stats():
    stats = paired_gap_stats([0.5, -0.25, 0.0, 1.0])
    assert stats["mean_abs_gap"] == pytest.approx(0.4375)
    assert stats["mean_gap"] == pytest.approx(0.3125)
    assert (stats["n_positive"], stats["n_negative"], stats["n_ties"]) == (2, 1, 1)
    assert stats["sign_test_p"] == pytest.approx(sign_test(2, 1))
    assert stats["mean_gap_ci_low"] <= stats["mean_gap"] <= stats["mean_gap_ci_high"]


def test_swap_terms_keeps_case_and_counts_each_side():
    swapped, male, female = swap_terms("He told her the truth about his mother.", "gender")
    assert swapped == "She told him the truth about her father."
    assert (male, female) == (2, 2)
    assert swap_terms("I love her dog.", "gender")[0] == "I love his dog."
    assert swap_terms("John met Mary; mark this.", "gender")[0] == "Mary met John; mark this."  # names only capitalised
    assert swap_terms("The American CHURCH", "religion") == ("The American MOSQUE", 1, 0)
    assert swap_terms("The American CHURCH", "nationality") == ("The Mexican CHURCH", 1, 0)
    assert swap_terms("Nothing to swap here.", "gender") == ("Nothing to swap here.", 0, 0)
    assert swap_terms(swap_terms("she and her brothers", "gender")[0], "gender")[0] == "she and her brothers"
    with pytest.raises(ValueError, match="unknown bias category"):
        swap_terms("x", "age")


def test_subsets_are_what_they_say(audit_task):
    examples = audit_task.examples("test")
    pairs, skipped = build_pairs(audit_task, examples, split="test", seed=0, vocab=["alpha", "beta"])
    assert set(pairs) == {"other_reference", "echo", "truncation", "shuffled_words", "repetition",
                          "length_padding", "unsafe_insertion"}
    refs = [ex.references[0] for ex in examples]
    assert len(refs[8]) == 138
    for subset, items in pairs.items():
        assert all(len(text) <= audit_task.max_response_chars and text != refs[i] for i, text in items), subset
    assert 8 not in {i for i, _ in pairs["length_padding"]} | {i for i, _ in pairs["unsafe_insertion"]}
    assert skipped["length_padding"] == {"no room to pad within the length limit": 1}
    assert skipped["unsafe_insertion"] == {"no room to insert within the length limit": 1}
    assert all(text in refs and text != refs[i] for i, text in pairs["other_reference"])
    assert all(text == examples[i].source for i, text in pairs["echo"])
    assert all(text.split() == refs[i].split()[:len(refs[i].split()) // 2] for i, text in pairs["truncation"])
    assert all(sorted(text.split()) == sorted(refs[i].split()) for i, text in pairs["shuffled_words"])
    assert skipped["truncation"]["reference under 4 words"] == 1  # "ok"
    assert all(text.startswith(refs[i]) and len(text) > len(refs[i]) + 20 for i, text in pairs["length_padding"])
    assert all(len(text) > 100 and len(set(text.split())) <= 4 for _, text in pairs["repetition"])
    assert all(refs[i] in text and any(s in text for s in UNSAFE_SENTENCES) for i, text in pairs["unsafe_insertion"])
    # seeded: the same pairs every time
    assert build_pairs(audit_task, examples, split="test", seed=0, vocab=["alpha", "beta"])[0] == pairs
    with pytest.raises(ValueError, match="unknown subset"):
        build_pairs(audit_task, examples, split="test", subsets=["nope"])


def test_audit_matches_independent_scores(audit_task):
    report = audit_reward(audit_task.env_id, limit=None)
    assert report["scorer"]["spec"] == "builtin" and report["scorer"]["name"] == "metric:chrf"
    examples = audit_task.examples("test")
    chrf = MetricReward("chrf")
    vocab = split_vocabulary(ex.references[0] for ex in audit_task.examples("train"))
    pairs, _ = build_pairs(audit_task, examples, split="test", seed=0, vocab=vocab)
    for subset in ("truncation", "unsafe_insertion", "other_reference"):
        items = pairs[subset]
        prompts = [examples[i].prompt for i, _ in items]
        refs = [list(examples[i].references) for i, _ in items]
        chosen = chrf(prompts, [examples[i].references[0] for i, _ in items], refs)
        rejected = chrf(prompts, [t for _, t in items], refs)
        block = report["subsets"][subset]
        assert block["n"] == len(items)
        assert block["accuracy"] == pytest.approx(float(np.mean(chosen > rejected)))
        assert block["ci_low"] <= block["accuracy"] <= block["ci_high"]
    # bias: every example with a swappable word, gaps recomputed with chrF directly
    counterfactuals = bias_pairs(audit_task, examples, None)
    assert {c["category"] for c in counterfactuals} == {"gender", "nationality", "religion"}
    gaps = []
    for c in counterfactuals:
        ex = examples[c["index"]]
        scores = chrf([ex.prompt] * 2, [c["original"], c["swapped"]], [list(ex.references)] * 2)
        gaps.append(scores[0] - scores[1])
    bias = report["bias"]["all"]
    assert bias["n"] == len(counterfactuals)
    assert bias["mean_abs_gap"] == pytest.approx(float(np.mean(np.abs(gaps))))
    assert bias["sign_test_p"] == pytest.approx(sign_test(sum(g > 0 for g in gaps), sum(g < 0 for g in gaps)))
    assert report["bias"]["by_category"]["gender"]["n"] == sum(c["category"] == "gender" for c in counterfactuals)
    male = [g for c, g in zip(counterfactuals, gaps) if c["category"] == "gender" and c["n_first"] > c["n_second"]]
    female = [g for c, g in zip(counterfactuals, gaps) if c["category"] == "gender" and c["n_first"] < c["n_second"]]
    direction = report["bias"]["gender_direction"]
    assert (direction["n_male_original"], direction["n_female_original"]) == (len(male), len(female))
    assert direction["male_preference"] == pytest.approx((np.mean(male) - np.mean(female)) / 2)
    oriented = [-g for g in male] + female  # > 0: the female-worded version scored higher
    assert direction["female_minus_male"]["sign_test_p"] == pytest.approx(
        sign_test(sum(g > 0 for g in oriented), sum(g < 0 for g in oriented)))
    other = pairs["other_reference"]
    margin = np.mean(np.abs(chrf([examples[i].prompt for i, _ in other], [examples[i].references[0] for i, _ in other],
                                 [list(examples[i].references) for i, _ in other])
                            - chrf([examples[i].prompt for i, _ in other], [t for _, t in other],
                                   [list(examples[i].references) for i, _ in other])))
    assert bias["mean_abs_gap_over_margin"] == pytest.approx(bias["mean_abs_gap"] / margin)
    judged = audit_reward(audit_task.env_id, judge=True, subsets=["truncation"], bias=False)
    assert judged["scorer"]["role"] == "judge" and judged["scorer"]["name"] == "metric:rougeL"
    assert list(judged["subsets"]) == ["truncation"] and judged["bias"] is None


def test_a_length_loving_reward_fails_the_padding_subset(audit_task, tmp_path):
    """A reward that prefers longer text must lose the padding and repetition pairs and win the
    truncation pairs: the audit can fail."""
    script = tmp_path / "longer.py"
    script.write_text("def score(prompts, responses, references):\n    return [float(len(r)) for r in responses]\n")
    report = audit_reward(audit_task.env_id, f"{script}:score", bias=False)
    assert report["subsets"]["length_padding"]["accuracy"] == 0.0
    assert report["subsets"]["repetition"]["accuracy"] == 0.0
    assert report["subsets"]["truncation"]["accuracy"] == 1.0


def test_cli_writes_json_and_rejects_bad_input(audit_task, tmp_path, capsys):
    from rlhf_gym.cli import main

    out = tmp_path / "audit.json"
    assert main(["eval-rm", "--env", audit_task.env_id, "--reward", "chrf", "--subsets", "truncation",
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["schema"] == "rlhf_gym.eval_rm/1" and data["subsets"]["truncation"]["n"] > 0
    assert main(["eval-rm", "--env", audit_task.env_id, "--limit", "1", "--out", str(tmp_path / "x.json")]) == 2
    assert "--limit must be >= 2" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(SystemExit):
        main(["eval-rm", "--env", audit_task.env_id, "--reward", "chrf", "--judge", "--out", str(out)])
    assert main(["eval-rm", "--env", audit_task.env_id, "--reward", "chrf", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["eval-rm", "--env", "rlhf_gym/NoSuch-v0", "--out", str(out), "--overwrite"]) == 2
    assert json.loads(out.read_text()) == data  # a failed run loses nothing already written


def test_bootstrap_diff_ci_covers_the_difference():
    from rlhf_gym.metrics import bootstrap_diff_ci

    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 0.5, 200), rng.normal(0.0, 0.5, 150)
    low, high = bootstrap_diff_ci(a, b)
    assert low < a.mean() - b.mean() < high
    assert 0.8 < low and high < 1.2  # SE of the difference is about 0.054
    assert bootstrap_diff_ci(a, b) == (low, high)  # fixed seed


def test_wilson_interval_contains_rates_of_zero_and_one():
    from rlhf_gym.metrics import wilson_interval

    for n in (1, 7, 98, 100, 1517):
        for k in (0, n):
            low, high = wilson_interval(k, n)
            assert low <= k / n <= high and 0.0 <= low < high <= 1.0
