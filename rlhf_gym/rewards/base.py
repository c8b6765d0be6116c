"""The reward-model interface and the rewards that need no training.

A reward model scores a batch: ``scores = rm(prompts, responses, references)`` -> float64 array.
References are passed to every model (reference-free ones ignore them), so metric rewards,
reference-aware learned metrics and plain preference models all plug in the same way.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class RewardModel(Protocol):
    """Anything with a ``name`` that maps a batch of (prompt, response[, references]) to scores."""

    name: str

    def __call__(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
    ) -> np.ndarray: ...


def _as_scores(values: Any, n: int, name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).reshape(-1)
    if scores.shape[0] != n:
        raise ValueError(f"reward model {name!r} returned {scores.shape[0]} scores for {n} responses")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"reward model {name!r} returned a non-finite score")
    return scores


class CallableReward:
    """Wrap a plain Python function as a reward model.

    The function may be per-example, ``f(prompt, response) -> float`` or
    ``f(prompt, response, references) -> float``, or batched (``batched=True``):
    ``f(prompts, responses[, references]) -> list[float]``.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None, batched: bool = False):
        self.fn = fn
        self.batched = batched
        self.name = name or getattr(fn, "__name__", "callable")
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self._takes_references = len(params) >= 3 or any(
            p.kind == p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values())

    def __call__(self, prompts, responses, references=None) -> np.ndarray:
        n = len(responses)
        refs = references if references is not None else [()] * n
        if self.batched:
            out = self.fn(prompts, responses, refs) if self._takes_references else self.fn(prompts, responses)
        elif self._takes_references:
            out = [self.fn(p, r, ref) for p, r, ref in zip(prompts, responses, refs)]
        else:
            out = [self.fn(p, r) for p, r in zip(prompts, responses)]
        return _as_scores(out, n, self.name)


def _metric_sha256(metric: str) -> str:
    """Identifies a metric reward: its name, settings and the implementing package's version."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    package = "sacrebleu" if metric in ("chrf", "bleu") else "rouge-score"
    try:
        package_version = version(package)
    except PackageNotFoundError:  # pragma: no cover - core dependencies
        package_version = "unknown"
    settings = {"chrf": "CHRF()", "bleu": "BLEU(effective_order=True)"}.get(metric, "RougeScorer(use_stemmer=True)")
    return hashlib.sha256(f"metric:{metric}|{settings}|{package}=={package_version}".encode()).hexdigest()


class MetricReward:
    """Sentence-level chrF, BLEU or ROUGE-L of the response against its references, in [0, 1].

    Uses the same metric implementations as the evaluation harness (sacrebleu, rouge-score).
    """

    METRICS = ("chrf", "bleu", "rougeL", "rouge1", "rouge2")

    def __init__(self, metric: str = "chrf"):
        if metric not in self.METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(self.METRICS)}")
        self.metric = metric
        self.name = f"metric:{metric}"
        self.sha256 = _metric_sha256(metric)
        if metric in ("chrf", "bleu"):
            import sacrebleu

            self._scorer = sacrebleu.CHRF() if metric == "chrf" else sacrebleu.BLEU(effective_order=True)
        else:
            from rouge_score import rouge_scorer

            self._scorer = rouge_scorer.RougeScorer([metric], use_stemmer=True)

    def __call__(self, prompts, responses, references=None) -> np.ndarray:
        if references is None:
            raise ValueError(f"{self.name} needs references")
        out = []
        for response, refs in zip(responses, references):
            if self.metric in ("chrf", "bleu"):
                out.append(self._scorer.sentence_score(response, list(refs)).score / 100.0)
            else:
                out.append(max(self._scorer.score(ref, response)[self.metric].fmeasure for ref in refs))
        return _as_scores(out, len(responses), self.name)


class WeightedReward:
    """A weighted sum of reward models, e.g. ``0.7 * learned + 0.3 * chrF``."""

    def __init__(self, parts: Sequence[tuple[float, RewardModel]]):
        if not parts:
            raise ValueError("WeightedReward needs at least one (weight, model) pair")
        self.parts = list(parts)
        self.name = " + ".join(f"{w:g}*{m.name}" for w, m in self.parts)

    def components(self, prompts, responses, references=None) -> dict[str, np.ndarray]:
        return {m.name: m(prompts, responses, references) for _, m in self.parts}

    def __call__(self, prompts, responses, references=None) -> np.ndarray:
        total = np.zeros(len(responses), dtype=np.float64)
        for weight, model in self.parts:
            total += weight * model(prompts, responses, references)
        return total


def as_reward_model(obj: Any) -> RewardModel:
    """Accept a reward model or a plain callable."""
    if isinstance(obj, RewardModel) and hasattr(obj, "name"):
        return obj
    if callable(obj):
        return CallableReward(obj)
    raise TypeError(f"expected a reward model or a callable, got {type(obj).__name__}")
