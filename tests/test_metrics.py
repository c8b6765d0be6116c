import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from rlhf_gym import metrics

HYPS = ["The cat sat on the mat. It was happy.", "A dog barked loudly at night", "Rain fell."]
REFS = [["The cat is sitting on the mat. It looked happy."], ["The dog barked at night."], ["It rained all day."]]


def test_bleu_and_chrf_equal_sacrebleu_called_directly():
    bleu, sig = metrics.corpus_bleu(HYPS, REFS)
    direct = sacrebleu.corpus_bleu(HYPS, [[r[0] for r in REFS]])
    assert bleu == pytest.approx(direct.score, abs=1e-12)
    assert sig.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    chrf, chrf_sig = metrics.corpus_chrf(HYPS, REFS)
    assert chrf == pytest.approx(sacrebleu.corpus_chrf(HYPS, [[r[0] for r in REFS]]).score, abs=1e-12)
    assert "nc:6|nw:0" in chrf_sig


def test_bleu_with_a_variable_number_of_references():
    refs = [["The cat is sitting on the mat.", "A cat sat on the mat."], ["The dog barked at night."]]
    bleu, sig = metrics.corpus_bleu(HYPS[:2], refs)
    direct = sacrebleu.corpus_bleu(HYPS[:2], [[refs[0][0], refs[1][0]], [refs[0][1], None]])
    assert bleu == pytest.approx(direct.score) and "nrefs:var" in sig


def test_rouge_equals_rouge_score_averaged_over_examples():
    # ours memoises the Porter stemmer (speed); the reference scorers below are rouge-score's own
    assert isinstance(metrics._rouge_scorer()._tokenizer._stemmer, metrics._MemoStemmer)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    ours = metrics.rouge(HYPS, REFS)
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = 100 * np.mean([scorer.score(r[0], h)[key].fmeasure for h, r in zip(HYPS, REFS)])
        assert ours[key] == pytest.approx(expected, abs=1e-9)
    lsum = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    expected_lsum = 100 * np.mean([
        lsum.score("\n".join(metrics.split_sentences(r[0])), "\n".join(metrics.split_sentences(h)))["rougeLsum"].fmeasure
        for h, r in zip(HYPS, REFS)])
    assert ours["rougeLsum"] == pytest.approx(expected_lsum, abs=1e-9)


def test_identical_text_scores_100():
    refs = [[h] for h in HYPS]
    assert metrics.corpus_bleu(HYPS, refs)[0] == pytest.approx(100.0)
    assert metrics.rouge(HYPS, refs)["rougeL"] == pytest.approx(100.0)


def test_sentence_split():
    assert metrics.split_sentences("One. Two! (Three) four? 5 items.") == ["One.", "Two!", "(Three) four?", "5 items."]


def test_win_rate_counts_ties_as_half_and_ci_brackets_the_mean():
    a = [3.0, 1.0, 2.0, 2.0]
    b = [1.0, 2.0, 2.0, 0.0]
    win = metrics.win_rate(a, b)
    assert (win["wins"], win["ties"], win["losses"]) == (2, 1, 1)
    assert win["mean"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert win["ci_low"] <= win["mean"] <= win["ci_high"]
    # same data, same seed: the CI is reproducible
    assert metrics.win_rate(a, b) == win


def test_bootstrap_ci_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = metrics.bootstrap_ci(rng.integers(0, 2, 20))
    large = metrics.bootstrap_ci(rng.integers(0, 2, 2000))
    assert (large[1] - large[0]) < (small[1] - small[0])
    lo, hi = metrics.bootstrap_ci(np.r_[np.ones(700), np.zeros(300)])
    assert lo < 0.7 < hi and hi - lo < 0.07
