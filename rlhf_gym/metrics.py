"""Evaluation metrics, each computed exactly as its reference library does.

- BLEU and chrF: sacrebleu corpus scores with default settings (0-100) and their signatures.
- ROUGE-1/2/L/Lsum: rouge-score F-measure with ``use_stemmer=True``, best reference per example,
  averaged over examples, x100. Lsum reads sentences separated by newlines, so both sides are
  split into sentences first (rouge-score itself would treat a paragraph as one sentence).
- Preference win rate: judge preference per example (1 win, 0.5 tie, 0 loss), mean, and a 95%
  Wilson score interval with ties counted as half a win (never [0, 0] at a rate of 0; conservative
  with ties, which lower the variance). The length-controlled rate is in ``rlhf_gym.winrate``.
- Every printed rate goes through :func:`format_rate`, which rounds the interval outwards so the
  printed mean never lies outside its printed interval.
"""

from __future__ import annotations

import math
import re
from collections import Counter
import statistics
from typing import Any, Sequence

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 12345

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Rule-based English sentence split (nltk's punkt model is a download, not available offline)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """sacrebleu wants one stream per reference position; examples with fewer references get
    None, which sacrebleu skips."""
    width = max(len(r) for r in references)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, str]:
    import sacrebleu

    metric = sacrebleu.BLEU()
    score = metric.corpus_score(list(hypotheses), _reference_streams(references))
    return float(score.score), str(metric.get_signature())


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, str]:
    import sacrebleu

    metric = sacrebleu.CHRF()
    score = metric.corpus_score(list(hypotheses), _reference_streams(references))
    return float(score.score), str(metric.get_signature())


class _MemoStemmer:
    """rouge-score's Porter stemmer with each word's stem memoised: the stemmer is pure Python and
    took 12.6 of 129 CPU seconds of the main job on the v0 envs (198k calls, few distinct words);
    the stems, and so the scores, are the same."""

    def __init__(self, stemmer):
        import functools

        self.stem = functools.lru_cache(maxsize=1 << 17)(stemmer.stem)


def _rouge_scorer():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    tokenizer = getattr(scorer, "_tokenizer", None)  # rouge-score is pinned (0.1.2): its DefaultTokenizer
    if getattr(tokenizer, "_stemmer", None) is not None:
        tokenizer._stemmer = _MemoStemmer(tokenizer._stemmer)
    return scorer


def rouge(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    scorer = _rouge_scorer()
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, refs in zip(hypotheses, references):
        hyp_lines = "\n".join(split_sentences(hyp))
        best = dict.fromkeys(ROUGE_TYPES, 0.0)
        for ref in refs:
            plain = scorer.score(ref, hyp)
            lsum = scorer.score("\n".join(split_sentences(ref)), hyp_lines)["rougeLsum"]
            for key in ROUGE_TYPES:
                value = (lsum if key == "rougeLsum" else plain[key]).fmeasure
                best[key] = max(best[key], value)
        for key in ROUGE_TYPES:
            totals[key] += best[key]
    n = max(1, len(hypotheses))
    return {key: 100.0 * totals[key] / n for key in ROUGE_TYPES}


def preferences(scores_a: Sequence[float], scores_b: Sequence[float]) -> np.ndarray:
    """Per-example preference for A over B from judge scores: 1, 0.5 (exact tie) or 0."""
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    return np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))


def resample_indices(n: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(samples, n) indices drawn with replacement: the one bootstrap resampling of the project."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def bootstrap_ci(values: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (for unbounded quantities; proportions take
    :func:`wilson_interval`, which does not collapse at 0 or 1)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    means = values[resample_indices(values.size, samples, seed)].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def bootstrap_diff_ci(values_a: Sequence[float], values_b: Sequence[float], samples: int = BOOTSTRAP_SAMPLES,
                      seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``mean(a) - mean(b)`` for two independent samples (each
    resampled on its own, fixed seed)."""
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    diffs = (a[rng.integers(0, a.size, size=(samples, a.size))].mean(axis=1)
             - b[rng.integers(0, b.size, size=(samples, b.size))].mean(axis=1))
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1.0 - alpha))


def preference_interval(prefs: Sequence[float]) -> tuple[float, float]:
    """95% Wilson interval of a mean preference in [0, 1] (ties as 0.5 count as half a success)."""
    prefs = np.asarray(prefs, dtype=np.float64)
    return wilson_interval(float(prefs.sum()), int(prefs.size))


def win_rate(scores_a: Sequence[float], scores_b: Sequence[float]) -> dict[str, float | int]:
    """Raw win rate of A over B with n, win/tie/loss counts and a 95% Wilson interval."""
    prefs = preferences(scores_a, scores_b)
    low, high = preference_interval(prefs)
    return {"mean": float(prefs.mean()) if prefs.size else float("nan"), "ci_low": low, "ci_high": high,
            "n": int(prefs.size), "wins": int((prefs == 1).sum()), "ties": int((prefs == 0.5).sum()),
            "losses": int((prefs == 0).sum()), "interval": "wilson"}


def length_stats(texts: Sequence[str]) -> dict[str, float]:
    words = [len(t.split()) for t in texts] or [0]
    chars = [len(t) for t in texts] or [0]
    return {"mean_words": float(statistics.fmean(words)), "median_words": float(statistics.median(words)),
            "mean_chars": float(statistics.fmean(chars))}


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion: never [0, 0] or [1, 1], always contains the
    observed rate, sensible for rates near 0 or 1 where a bootstrap collapses."""
    if n <= 0:
        return float("nan"), float("nan")
    p = min(1.0, max(0.0, successes / n))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # min/max with p: at p = 0 or 1 rounding would leave p a hair outside (1.0 > 0.9999999999999999)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def rate_with_ci(flags: Sequence[bool]) -> dict[str, float | int]:
    """Share of True with n and a 95% Wilson interval."""
    flags = np.asarray(flags, dtype=bool)
    low, high = wilson_interval(float(flags.sum()), int(flags.size))
    return {"mean": float(flags.mean()) if flags.size else float("nan"), "ci_low": low, "ci_high": high,
            "n": int(flags.size), "count": int(flags.sum())}


def format_rate(rate: dict[str, Any] | None, digits: int = 3, percent: bool = False) -> str:
    """``mean [low, high]`` with the interval rounded outwards (low down, high up) at the mean's
    precision, so the printed mean is always inside the printed interval (plain rounding printed
    ``0.009 [0.01, 0.01]``). ``percent`` prints x100 with ``digits`` decimals."""
    if not rate or rate.get("mean") is None:
        return "-"
    scale = 100.0 if percent else 1.0
    mean, low, high = (rate.get(k) for k in ("mean", "ci_low", "ci_high"))
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{scale * mean:.{digits}f}"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return text
    step = 10.0 ** digits
    # a hair of tolerance so a bound that is exactly representable (0.25) is not pushed a step out
    lo = math.floor(scale * low * step + 1e-9) / step
    hi = math.ceil(scale * high * step - 1e-9) / step
    lo, hi = min(lo, float(text)), max(hi, float(text))
    return f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]"


def most_repeated_share(texts: Sequence[str]) -> dict[str, Any]:
    """How much of the output is one string repeated (a collapsed policy writes the same thing
    for every prompt): the share of the most common output, after whitespace/case folding."""
    if not texts:
        return {"share": float("nan"), "text": None, "count": 0, "distinct": 0}
    folded = Counter(" ".join(t.lower().split()) for t in texts)
    text, count = folded.most_common(1)[0]
    return {"share": count / len(texts), "text": text, "count": count, "distinct": len(folded)}


def sign_test(n_positive: int, n_negative: int) -> float:
    """Two-sided exact sign test: the p-value of seeing a split at least this uneven among
    ``n_positive + n_negative`` non-zero differences if each sign had probability 1/2 (ties are
    dropped before calling). Exact binomial with integer arithmetic, so it needs no scipy and is
    exact for any n: ``p = min(1, 2 * P[X <= min(k, n - k)])``, X ~ Binomial(n, 1/2)."""
    n_positive, n_negative = int(n_positive), int(n_negative)
    if n_positive < 0 or n_negative < 0:
        raise ValueError(f"counts must be >= 0, got {n_positive} and {n_negative}")
    n = n_positive + n_negative
    if n == 0:
        return float("nan")
    tail = sum(math.comb(n, i) for i in range(min(n_positive, n_negative) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def paired_gap_stats(gaps: Sequence[float]) -> dict[str, Any]:
    """Summary of paired score differences that should be 0 (e.g. a counterfactual swap): mean
    |gap|, mean signed gap with a 95% bootstrap CI, the counts of each sign and the sign test's
    two-sided p-value (exact zeros are ties and left out of the test)."""
    gaps = np.asarray(gaps, dtype=np.float64)
    n_pos, n_neg = int((gaps > 0).sum()), int((gaps < 0).sum())
    low, high = bootstrap_ci(gaps)
    return {"n": int(gaps.size), "mean_abs_gap": float(np.abs(gaps).mean()) if gaps.size else float("nan"),
            "mean_gap": float(gaps.mean()) if gaps.size else float("nan"), "mean_gap_ci_low": low,
            "mean_gap_ci_high": high, "n_positive": n_pos, "n_negative": n_neg,
            "n_ties": int(gaps.size - n_pos - n_neg), "sign_test_p": sign_test(n_pos, n_neg)}
