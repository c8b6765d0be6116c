"""Length-controlled win rates, multi-seed aggregates and the cross-task ranking score.

Judges reward or punish length (AlpacaEval's GPT-4 judge prefers longer answers; this project's
MPNet gold judge, which compares with the reference, punishes padding). The length-controlled (LC)
win rate answers "what would the win rate be if both outputs had the same length?", as
AlpacaEval 2 does (Dubois et al. 2024, the ``length_controlled_minimal`` GLM): fit

    P(A beats B) = sigmoid(theta + beta * tanh((len_A - len_B) / sd))

over the comparisons (preferences 1 / 0.5 / 0 enter the log-likelihood as fractional targets;
lengths in characters, what the env's action limit counts; ``sd`` is the standard deviation of
the length differences) and report ``sigmoid(theta)``, the predicted win rate at zero length
difference. A ridge of 0.01 on ``beta`` (:data:`LENGTH_RIDGE`: scikit-learn's ``C = 100``, the
strength of AlpacaEval's own fit) keeps the fit finite when length separates wins from losses;
it moves an ordinary fit by less than 1e-3. It does not stop a steep slope fitted on a narrow
range of length differences from extrapolating the rate at zero difference towards 0 or 1, and
a length difference that follows the prompt (the baseline is long where the task is easy) is
read as a length effect: see docs/evaluation.md for where that happens in the measurements.

Intervals (95%): the union of

- the percentile bootstrap over prompts (seeded; the whole procedure, ``sd`` included, is
  refit on every resample), which carries the uncertainty of the length slope, and
- the score interval of ``theta`` with ``beta`` profiled out: with no length differences it is
  exactly the Wilson interval of the raw rate, so a rate of 0 or 1 keeps a non-degenerate
  interval where the bootstrap collapses to a point.

The union is never narrower than either and always contains the estimate.

Multi-seed aggregates (``bench --seeds``) resample seeds and prompts together (a hierarchical
bootstrap: the prompts are shared by every seed, so they are resampled once per replicate), again
united with the score interval at the number of prompts.

The cross-task ranking score is the LC win rate against a fixed baseline agent per task
(:data:`BASELINE_AGENT`, computed by the scorer itself from the env's data): unlike the win rate
against the reference (which a reference-reading judge pins near 0 on every task), it is the
same question on every task, so its mean over tasks is comparable.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from rlhf_gym import metrics

LENGTH_RIDGE = 0.01
LENGTH_UNIT = "characters"
Z95 = 1.959964
# The scorer's own baseline for the ranking score: lead-1 / echo / copy-the-source. Deterministic,
# instant, needs no training data, so the leaderboard recomputes it for every submission.
BASELINE_AGENT = "lead"
_MAX_NEWTON = 100
_LOGIT_SPAN = 40.0


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))


def length_feature(delta: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """``tanh(delta / sd)`` and the ``sd`` used (weighted by resampling counts when given, ddof 1
    as AlpacaEval's pandas ``std``). Equal differences everywhere (``sd`` 0) give feature 0: length
    cannot be told apart from the intercept, so nothing is attributed to it."""
    delta = np.asarray(delta, dtype=np.float64)
    w = np.ones_like(delta) if weights is None else np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if total <= 1:
        return np.zeros_like(delta), 0.0
    mean = (w * delta).sum() / total
    sd = math.sqrt(max(0.0, (w * (delta - mean) ** 2).sum() / (total - 1)))
    if sd <= 1e-12 * max(1.0, float(np.abs(delta).max(initial=0.0))):
        return np.zeros_like(delta), 0.0
    return np.tanh(delta / sd), sd


def _batch_features(delta: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`length_feature` of ``delta`` under each row of weights in ``counts`` (B, n)."""
    total = counts.sum(axis=1, keepdims=True)
    mean = (counts * delta).sum(axis=1, keepdims=True) / np.maximum(total, 1.0)
    var = (counts * (delta - mean) ** 2).sum(axis=1, keepdims=True) / np.maximum(total - 1.0, 1.0)
    sd = np.sqrt(var)
    tiny = sd <= 1e-12 * max(1.0, float(np.abs(delta).max(initial=0.0)))
    return np.where(tiny, 0.0, np.tanh(delta / np.where(tiny, 1.0, sd)))


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """(B, n) multiplicities of a (B, m) matrix of resampled indices in [0, n)."""
    rows = indices.shape[0]
    flat = (np.arange(rows)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def _loglik(theta, beta, y, x, w, ridge):
    z = theta[:, None] + beta[:, None] * x
    # y log p + (1 - y) log(1 - p) = y z - log(1 + e^z), computed stably
    ll = (w * (y * z - np.logaddexp(0.0, z))).sum(axis=1)
    return ll - 0.5 * ridge * beta ** 2


def fit_length_logistic_batch(y: np.ndarray, x: np.ndarray, w: np.ndarray, ridge: float = LENGTH_RIDGE,
                              tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Newton-Raphson fits of ``(theta, beta)`` for B weighted datasets at once.

    ``y``: (n,) preferences in [0, 1]; ``x``: (B, n) length features; ``w``: (B, n) weights
    (bootstrap counts). Rows whose weighted preferences are all 0 (all 1) get theta -inf (+inf)
    and beta 0: the likelihood has no finite maximum there and the rate is exactly 0 (1)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    rows = w.shape[0]
    total = w.sum(axis=1)
    ybar = (w * y).sum(axis=1) / np.where(total > 0, total, 1.0)
    theta = np.zeros(rows)
    beta = np.zeros(rows)
    low, high = ybar <= 0.0, ybar >= 1.0
    theta[low], theta[high] = -np.inf, np.inf
    active = ~(low | high)
    theta[active] = np.log(ybar[active] / (1.0 - ybar[active]))
    ridge = float(ridge)
    eps = 1e-12  # keeps the Hessian invertible when ridge is 0 and a feature is all zero
    loglik = np.full(rows, -np.inf)
    loglik[active] = _loglik(theta[active], beta[active], y, x[active], w[active], ridge)
    for _ in range(_MAX_NEWTON):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        t, b, xa, wa = theta[idx], beta[idx], x[idx], w[idx]
        p = _sigmoid(t[:, None] + b[:, None] * xa)
        r = wa * (y - p)
        v = wa * p * (1.0 - p)
        g_t, g_b = r.sum(axis=1), (r * xa).sum(axis=1) - ridge * b
        h_tt, h_tb, h_bb = v.sum(axis=1) + eps, (v * xa).sum(axis=1), (v * xa * xa).sum(axis=1) + ridge + eps
        det = h_tt * h_bb - h_tb ** 2
        d_t = (h_bb * g_t - h_tb * g_b) / det
        d_b = (h_tt * g_b - h_tb * g_t) / det
        # step halving: accept the largest step (1, 1/2, ...) that does not lower the likelihood
        base = loglik[idx]
        step = np.ones_like(t)
        for _ in range(40):
            cand = _loglik(t + step * d_t, b + step * d_b, y, xa, wa, ridge)
            bad = cand < base - 1e-12 * np.abs(base)
            if not bad.any():
                break
            step = np.where(bad, step / 2.0, step)
        theta[idx], beta[idx], loglik[idx] = t + step * d_t, b + step * d_b, cand
        done = np.abs(step * d_t) + np.abs(step * d_b) < tol
        active[idx[done]] = False
    return theta, beta


def fit_length_logistic(prefs: Sequence[float], delta: Sequence[float], ridge: float = LENGTH_RIDGE,
                        weights: Sequence[float] | None = None) -> dict[str, float]:
    """One fit on length differences ``delta``: ``theta``, ``beta``, the ``sd`` of the feature and
    ``lc`` = sigmoid(theta)."""
    y = np.asarray(prefs, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    x, sd = length_feature(np.asarray(delta, dtype=np.float64), w)
    theta, beta = fit_length_logistic_batch(y, x[None], w[None], ridge)
    return {"theta": float(theta[0]), "beta": float(beta[0]), "sd": sd, "lc": float(_sigmoid(theta[0]))}


def _profile_beta(theta0: float, y, x, w, ridge: float, beta: float) -> float:
    """argmax over beta of the penalised log-likelihood at a fixed theta (concave: Newton, warm
    started from ``beta``)."""
    for _ in range(_MAX_NEWTON):
        p = _sigmoid(theta0 + beta * x)
        grad = (w * (y - p) * x).sum() - ridge * beta
        hess = (w * p * (1.0 - p) * x * x).sum() + ridge + 1e-12
        step = grad / hess
        beta += step
        if abs(step) < 1e-9:
            break
    return beta


def _score_statistic(theta0: float, y, x, w, ridge: float, beta0: float) -> tuple[float, float]:
    """Score (Rao) statistic for H0: theta = theta0, beta profiled out (chi-square(1) under H0),
    and the profiled beta. With x = 0 it is (S - n p0)^2 / (n p0 (1 - p0)): the statistic behind
    Wilson's interval."""
    beta = _profile_beta(theta0, y, x, w, ridge, beta0) if ridge > 0 or np.any(x) else 0.0
    p = _sigmoid(theta0 + beta * x)
    v = w * p * (1.0 - p)
    u = (w * (y - p)).sum()
    i_tt, i_tb, i_bb = v.sum(), (v * x).sum(), (v * x * x).sum() + ridge
    det = i_tt * i_bb - i_tb ** 2
    if det <= 0 or i_tt <= 0:
        return math.inf, beta
    return u * u * i_bb / det, beta


def score_interval(prefs: Sequence[float], x: Sequence[float], theta: float, ridge: float = LENGTH_RIDGE,
                   weights: Sequence[float] | None = None, z: float = Z95) -> tuple[float, float]:
    """The (sigmoid-scale) set of theta0 the score test does not reject at level z: bisection on
    each side of the estimate ``theta`` (a rate of exactly 0 or 1 keeps its bound at 0 or 1)."""
    y, x = np.asarray(prefs, dtype=np.float64), np.asarray(x, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    centre = float(np.clip(theta, -_LOGIT_SPAN / 2, _LOGIT_SPAN / 2))
    beta0 = _profile_beta(centre, y, x, w, ridge, 0.0)
    crit = z * z
    bounds = []
    for direction in (-1.0, 1.0):
        far = centre + direction * _LOGIT_SPAN
        stat, _ = _score_statistic(far, y, x, w, ridge, beta0)
        if stat <= crit:
            bounds.append(0.0 if direction < 0 else 1.0)
            continue
        inside, outside, beta = centre, far, beta0
        for _ in range(32):  # 40 / 2^32: the logit bound to 1e-8
            mid = 0.5 * (inside + outside)
            stat, beta_mid = _score_statistic(mid, y, x, w, ridge, beta)
            if stat <= crit:
                inside, beta = mid, beta_mid
            else:
                outside = mid
        bounds.append(float(_sigmoid(inside)))
    return bounds[0], bounds[1]


def _lengths(texts: Sequence[str]) -> np.ndarray:
    return np.array([len(t) for t in texts], dtype=np.float64)


def _summary(lc: float, theta: float, beta: float, sd: float, boot: np.ndarray, score: tuple[float, float],
             n: int, raw_mean: float, mean_delta: float, samples: int, seed: int) -> dict[str, Any]:
    boot_lo, boot_hi = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))) if boot.size else (lc, lc)
    low = min(boot_lo, score[0], lc)
    high = max(boot_hi, score[1], lc)
    return {"mean": lc, "ci_low": low, "ci_high": high, "n": int(n), "raw_mean": raw_mean,
            "theta": theta if math.isfinite(theta) else None, "beta": beta, "length_sd": sd,
            "mean_length_difference": mean_delta, "length_unit": LENGTH_UNIT,
            "bootstrap_ci": [boot_lo, boot_hi], "score_ci": [float(score[0]), float(score[1])],
            "bootstrap_samples": int(samples), "bootstrap_seed": int(seed), "ridge": LENGTH_RIDGE}


def lc_from_preferences(prefs: Sequence[float], delta: Sequence[float], samples: int = metrics.BOOTSTRAP_SAMPLES,
                        seed: int = metrics.BOOTSTRAP_SEED) -> dict[str, Any]:
    """LC win rate with its 95% interval from per-prompt preferences and length differences
    (A minus B). Results hold the fit (theta, beta, sd) and both intervals that were united."""
    y = np.asarray(prefs, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    n = y.size
    if n == 0:
        nan = float("nan")
        return {"mean": nan, "ci_low": nan, "ci_high": nan, "n": 0}
    fit = fit_length_logistic(y, delta)
    x, _ = length_feature(delta)
    counts = _counts(metrics.resample_indices(n, samples, seed), n)
    theta_b, _ = fit_length_logistic_batch(y, _batch_features(delta, counts), counts)
    score = score_interval(y, x, fit["theta"])
    return _summary(fit["lc"], fit["theta"], fit["beta"], fit["sd"], _sigmoid(theta_b), score, n,
                    float(y.mean()), float(delta.mean()), samples, seed)


def compare(scores_a: Sequence[float], scores_b: Sequence[float], texts_a: Sequence[str],
            texts_b: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(raw win rate, LC win rate) of A over B from judge scores and the two texts."""
    raw = metrics.win_rate(scores_a, scores_b)
    prefs = metrics.preferences(scores_a, scores_b)
    return raw, lc_from_preferences(prefs, _lengths(texts_a) - _lengths(texts_b))


def comparison_metrics(name: str, scores_a, scores_b, texts_a, texts_b) -> dict[str, Any]:
    """``{"win_rate_vs_NAME": raw, "lc_win_rate_vs_NAME": lc}`` for a results block."""
    raw, lc = compare(scores_a, scores_b, texts_a, texts_b)
    return {f"win_rate_vs_{name}": raw, f"lc_win_rate_vs_{name}": lc}


def paired_gain(prefs_a: Sequence[float], delta_a: Sequence[float], prefs_b: Sequence[float],
                delta_b: Sequence[float], samples: int = metrics.BOOTSTRAP_SAMPLES,
                seed: int = metrics.BOOTSTRAP_SEED) -> dict[str, Any]:
    """How much agent A's rate exceeds agent B's against the same opponent on the same prompts
    (e.g. a padded output against its unpadded base, both against lead): the raw gain and the LC
    gain, each with a 95% percentile interval from one paired bootstrap over prompts (the same
    resampled prompts for both agents, the LC fits redone on every resample, ``sd`` included).
    ``prefs_*``: per-prompt preferences of the agent over the opponent; ``delta_*``: length
    differences (agent minus opponent)."""
    ya, yb = np.asarray(prefs_a, dtype=np.float64), np.asarray(prefs_b, dtype=np.float64)
    da, db = np.asarray(delta_a, dtype=np.float64), np.asarray(delta_b, dtype=np.float64)
    n = ya.size
    if not (yb.size == da.size == db.size == n) or n == 0:
        raise ValueError(f"paired_gain needs four non-empty arrays of one length, got {ya.size}, {da.size}, "
                         f"{yb.size}, {db.size}")
    counts = _counts(metrics.resample_indices(n, samples, seed), n)
    total = counts.sum(axis=1)
    raw_boot = (counts * (ya - yb)).sum(axis=1) / total
    lc_a, lc_b = fit_length_logistic(ya, da)["lc"], fit_length_logistic(yb, db)["lc"]
    theta_a, _ = fit_length_logistic_batch(ya, _batch_features(da, counts), counts)
    theta_b, _ = fit_length_logistic_batch(yb, _batch_features(db, counts), counts)
    lc_boot = _sigmoid(theta_a) - _sigmoid(theta_b)
    q = lambda v: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]  # noqa: E731
    return {"raw_gain": float(ya.mean() - yb.mean()), "raw_gain_ci": q(raw_boot),
            "lc_gain": float(lc_a - lc_b), "lc_gain_ci": q(lc_boot), "n": int(n),
            "bootstrap_samples": int(samples), "bootstrap_seed": int(seed)}


def baseline_predictions(task, examples) -> list[str]:
    """The ranking baseline's outputs (:data:`BASELINE_AGENT`) for ``examples``, made here from
    the env's own data so a submission cannot choose or edit them (valid actions: the lead agent
    cuts an over-long echo to the env's limit)."""
    from rlhf_gym.agents import make_agent
    from rlhf_gym.evaluation import generate

    agent = make_agent(BASELINE_AGENT, task)
    return [r["prediction"] for r in generate(agent, examples, batch_size=max(1, len(examples)), show_progress=False)]


def lc_warning(lc: dict[str, Any] | None, abs_diff: float = 0.10, rel_diff: float = 4.0) -> bool:
    """Whether an LC rate moved so far from the raw rate that the length model is suspect
    (AlpacaEval's rule: more than ``abs_diff`` and more than a ``1/rel_diff`` share of the room
    towards 0 or 1). It flags the extrapolations of docs/evaluation.md: a slope fitted on a narrow
    range of length differences, or a length difference that follows the prompt."""
    if not lc or lc.get("raw_mean") is None or lc.get("mean") is None:
        return False
    raw, new = lc["raw_mean"], lc["mean"]
    too_small = new < min(raw - raw / rel_diff, raw - abs_diff)
    too_large = new > max(raw + (1.0 - raw) / rel_diff, raw + abs_diff)
    return bool(too_small or too_large)


def format_lc(lc: dict[str, Any] | None) -> str:
    """:func:`rlhf_gym.metrics.format_rate`, with ``!`` when :func:`lc_warning` flags the rate."""
    return metrics.format_rate(lc) + (" !" if lc_warning(lc) else "")


# ---------------------------------------------------------------------------- multi-seed


def is_sampling(agent) -> bool:
    """Whether an agent's outputs depend on its seed: an explicit ``deterministic`` attribute
    decides; else a ``temperature`` above 0 (model agents are greedy at 0); else having a
    ``seed`` at all. Reference, lead, retrieval and pad have none: one seed suffices for them."""
    if getattr(agent, "deterministic", None) is not None:
        return not agent.deterministic
    temperature = getattr(agent, "temperature", None)
    if temperature is not None:
        return float(temperature) > 0
    return hasattr(agent, "seed")


def set_agent_seed(agent, seed: int) -> None:
    if not hasattr(agent, "seed"):
        raise ValueError(f"agent {getattr(agent, 'name', agent)!r} samples but has no `seed` attribute to set; "
                         "give it one (read in act()) to run it with --seeds")
    agent.seed = int(seed)


def deterministic_seed_info(seeds: Sequence[int]) -> dict[str, Any]:
    return {"requested": [int(s) for s in seeds], "seeds": [int(seeds[0])], "deterministic": True,
            "note": "deterministic agent (no sampling): one seed suffices, the other seeds would repeat it"}



def _hierarchical_counts(k: int, n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, k, n) weights: seeds and prompts resampled with replacement in each replicate
    (prompts once per replicate, shared by the seeds, as they are in the data)."""
    rng = np.random.default_rng(seed)
    seed_counts = _counts(rng.integers(0, k, size=(samples, k)), k)
    prompt_counts = _counts(rng.integers(0, n, size=(samples, n)), n)
    return seed_counts[:, :, None] * prompt_counts[:, None, :]


def aggregate_rate(prefs: np.ndarray, samples: int = metrics.BOOTSTRAP_SAMPLES,
                   seed: int = metrics.BOOTSTRAP_SEED) -> dict[str, Any]:
    """Raw win rate pooled over a (seeds, prompts) preference matrix, with the union of the
    hierarchical bootstrap interval and Wilson's at the number of prompts (the seeds of one
    prompt are not independent evidence)."""
    prefs = np.asarray(prefs, dtype=np.float64)
    k, n = prefs.shape
    counts = _hierarchical_counts(k, n, samples, seed)
    boot = (counts * prefs).sum(axis=(1, 2)) / counts.sum(axis=(1, 2))
    mean = float(prefs.mean())
    w_lo, w_hi = metrics.wilson_interval(mean * n, n)
    lo, hi = float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))
    return {"mean": mean, "ci_low": min(lo, w_lo, mean), "ci_high": max(hi, w_hi, mean), "n": int(n), "seeds": int(k),
            "comparisons": int(k * n), "bootstrap_ci": [lo, hi], "wilson_ci": [w_lo, w_hi],
            "interval": "hierarchical bootstrap (seeds x prompts) united with Wilson at n prompts"}


def aggregate_lc(prefs: np.ndarray, delta: np.ndarray, samples: int = metrics.BOOTSTRAP_SAMPLES,
                 seed: int = metrics.BOOTSTRAP_SEED) -> dict[str, Any]:
    """LC win rate of all (seed, prompt) comparisons in one fit; interval as :func:`aggregate_rate`
    (hierarchical bootstrap, refit each time, united with the score interval with each
    comparison weighted 1/seeds, i.e. at the number of prompts)."""
    y = np.asarray(prefs, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    k, n = y.shape
    flat_y, flat_d = y.ravel(), delta.ravel()
    fit = fit_length_logistic(flat_y, flat_d)
    counts = _hierarchical_counts(k, n, samples, seed).reshape(samples, k * n)
    theta_b, _ = fit_length_logistic_batch(flat_y, _batch_features(flat_d, counts), counts)
    x, _ = length_feature(flat_d)
    score = score_interval(flat_y, x, fit["theta"], weights=np.full(k * n, 1.0 / k))
    out = _summary(fit["lc"], fit["theta"], fit["beta"], fit["sd"], _sigmoid(theta_b), score, n,
                   float(flat_y.mean()), float(flat_d.mean()), samples, seed)
    out.update(seeds=int(k), comparisons=int(k * n))
    return out


def aggregate_mean(values: np.ndarray, samples: int = metrics.BOOTSTRAP_SAMPLES,
                   seed: int = metrics.BOOTSTRAP_SEED) -> dict[str, Any]:
    """Mean of a (seeds, prompts) matrix of scores with its hierarchical-bootstrap 95% interval."""
    values = np.asarray(values, dtype=np.float64)
    k, n = values.shape
    counts = _hierarchical_counts(k, n, samples, seed)
    boot = (counts * values).sum(axis=(1, 2)) / counts.sum(axis=(1, 2))
    return {"mean": float(values.mean()), "ci_low": float(np.quantile(boot, 0.025)),
            "ci_high": float(np.quantile(boot, 0.975)), "n": int(n), "seeds": int(k)}


# Generation fields of a results block: (judge score of A, text of A, judge score of B, text of B)
_PAIRS = {
    "reference": ("judge_score", "prediction", "reference_judge_score", "reference"),
    "baseline": ("judge_score", "prediction", "baseline_judge_score", "baseline_prediction"),
    "agent": ("judge_score", "prediction", "vs_judge_score", "vs_prediction"),
}
SEED_METRICS = ("reward_mean", "judge_mean", "win_rate_vs_reference", "lc_win_rate_vs_reference",
                "win_rate_vs_baseline", "lc_win_rate_vs_baseline", "win_rate_vs_agent", "lc_win_rate_vs_agent",
                "length", "most_repeated_share", "bleu", "chrf", "rougeL")


# On envs with a reference-free judge, the win rate against the reference is that judge's
# (``bench`` writes its scores as refjudge_*): the aggregate over seeds must read the same fields.
_REFJUDGE_PAIR = ("refjudge_score", "prediction", "refjudge_reference_score", "reference")


def _field(gen: dict, key: str):
    return gen["references"][0] if key == "reference" else gen.get(key)


def aggregate_seed_blocks(blocks: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Per-seed numbers and their aggregate for the results block of a sampling agent run with
    several seeds (``blocks[j]`` is the block scored for ``seeds[j]``; the prompts are the same)."""
    ids = [g["id"] for g in blocks[0]["generations"]]
    for block in blocks[1:]:
        if [g["id"] for g in block["generations"]] != ids:
            raise ValueError("seed blocks must score the same examples in the same order")
    per_seed = [{"seed": int(s), "metrics": {k: b["metrics"].get(k) for k in SEED_METRICS},
                 "predictions": [g["prediction"] for g in b["generations"]]} for s, b in zip(seeds, blocks)]
    aggregate: dict[str, Any] = {}
    for name, pair in _PAIRS.items():
        if name == "reference" and all("refjudge_score" in g for b in blocks for g in b["generations"]):
            pair = _REFJUDGE_PAIR
        sa, ta, sb, tb = pair
        if any(_field(g, sb) is None for b in blocks for g in b["generations"]):
            aggregate[f"win_rate_vs_{name}"] = aggregate[f"lc_win_rate_vs_{name}"] = None
            continue
        gens = [b["generations"] for b in blocks]
        prefs = np.array([metrics.preferences([g[sa] for g in gs], [_field(g, sb) for g in gs]) for gs in gens])
        delta = np.array([[len(g[ta]) - len(_field(g, tb)) for g in gs] for gs in gens], dtype=np.float64)
        aggregate[f"win_rate_vs_{name}"] = aggregate_rate(prefs)
        aggregate[f"lc_win_rate_vs_{name}"] = aggregate_lc(prefs, delta)
    aggregate["reward_mean"] = aggregate_mean(np.array([[g["reward"] for g in b["generations"]] for b in blocks]))
    aggregate["judge_mean"] = aggregate_mean(np.array([[g["judge_score"] for g in b["generations"]] for b in blocks]))
    return {"requested": [int(s) for s in seeds], "seeds": [int(s) for s in seeds], "deterministic": False,
            "per_seed": per_seed, "aggregate": aggregate,
            "note": "the block's metrics and generations are those of the first seed; 'aggregate' pools all seeds"}


# ---------------------------------------------------------------------------- ranking


RANKING_METRIC = "lc_win_rate_vs_baseline"


def combine_env_rates(rates: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Mean of per-env rates (the overall ranking score) with a 95% interval from the per-env
    intervals by a normal approximation (envs are independent test sets: SE_env = width / 3.92,
    SE = sqrt(sum SE_env^2) / envs). None when any env lacks the rate (it cannot be ranked fairly
    against systems that have all of theirs)."""
    rates = list(rates)
    if not rates or any(r is None or r.get("mean") is None for r in rates):
        return None
    means = np.array([r["mean"] for r in rates], dtype=np.float64)
    ses = np.array([(r["ci_high"] - r["ci_low"]) / (2 * Z95) for r in rates], dtype=np.float64)
    mean = float(means.mean())
    half = Z95 * float(np.sqrt((ses ** 2).sum())) / len(rates)
    return {"mean": mean, "ci_low": max(0.0, mean - half), "ci_high": min(1.0, mean + half), "envs": len(rates)}


def overall_ranking_score(blocks: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The bench summary's ranking score: :func:`combine_env_rates` of each env's LC win rate
    against the task's baseline agent (the aggregate over seeds where there is one)."""
    rates = []
    for block in blocks.values():
        if block.get("task") == "dialogue-memory":  # whole-episode blocks (rlhf_gym.memory) have no win rates
            continue
        agg = (block.get("seeds") or {}).get("aggregate") or {}
        rates.append(agg.get(RANKING_METRIC) or (block.get("metrics") or {}).get(RANKING_METRIC))
    out = combine_env_rates(rates)
    if out is not None:
        out.update(metric=RANKING_METRIC, baseline=BASELINE_AGENT,
                   env_ids=[e for e, b in blocks.items() if b.get("task") != "dialogue-memory"])
    return out


# ---------------------------------------------------------------------------- printing


def seeds_table(results: dict[str, Any]):
    """Per-seed rows and the aggregate of every multi-seed env of a results file (rich table)."""
    from rich.table import Table

    table = Table(title="per seed and aggregate (95% CI over seeds and prompts)")
    columns = ["env", "seed", "reward", "judge", "win vs ref", "LC vs ref", f"win vs {BASELINE_AGENT}",
               f"LC vs {BASELINE_AGENT}"]
    for column in columns:
        table.add_column(column, justify="left" if column == "env" else "right", no_wrap=True)
    for env_id, block in results["envs"].items():
        info = block.get("seeds")
        if not info:
            continue
        name = env_id.split("/", 1)[-1]
        if info.get("deterministic"):
            table.add_row(name, ", ".join(map(str, info["seeds"])), "-", "-", "-", "-", "-",
                          "deterministic agent: one seed suffices")
            continue
        for run in info["per_seed"]:
            m = run["metrics"]
            table.add_row(name, str(run["seed"]), f"{m['reward_mean']:.3f}", f"{m['judge_mean']:.3f}",
                          *(_cell(m, k) for k in ("win_rate_vs_reference", "lc_win_rate_vs_reference",
                                                  "win_rate_vs_baseline", "lc_win_rate_vs_baseline")))
        agg = info["aggregate"]
        table.add_row(name, "all", metrics.format_rate(agg["reward_mean"]), metrics.format_rate(agg["judge_mean"]),
                      *(_cell(agg, k) for k in ("win_rate_vs_reference", "lc_win_rate_vs_reference",
                                                "win_rate_vs_baseline", "lc_win_rate_vs_baseline")))
    return table


def _cell(metrics_block: dict[str, Any], key: str) -> str:
    value = metrics_block.get(key)
    return format_lc(value) if key.startswith("lc_") else metrics.format_rate(value)


def overall_line(results: dict[str, Any]) -> str:
    """The bench summary's ranking line."""
    score = results.get("overall") or overall_ranking_score(results["envs"])
    if score is None:
        return "overall: no ranking score (an env has no LC win rate vs the baseline)"
    line = (f"overall ranking score: LC win rate vs {BASELINE_AGENT}, mean over {score['envs']} env(s) "
            f"{metrics.format_rate(score)} (comparable across tasks; the win rate vs references is not)")
    flagged = [env_id.split("/", 1)[-1] for env_id, block in results["envs"].items()
               if lc_warning((block.get("metrics") or {}).get(RANKING_METRIC))]
    if flagged:
        line += (f"\n! LC far from the raw rate on {', '.join(flagged)}: the length model may be extrapolating "
                 "(see docs/evaluation.md)")
    return line
