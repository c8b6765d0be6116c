"""Over-optimisation curves attached to a submission (``rlhf-gym submit --overopt RUN_DIR``).

A submission may carry the table ``rlhf-gym overopt`` wrote for the run that trained the system
(``RUN_DIR/overopt.json``), compacted by :func:`compact` to its numbers (no response texts, no
per-response scores, no local checkpoint paths), under the document's top-level ``"overopt"``.

What the server can check, and what it cannot:

- the **points** -- per kept policy its KL to the starting policy and its mean proxy and gold
  scores on held-out prompts -- are *self-reported*: re-measuring them needs the run's
  checkpoints, which the server does not have. They are only validated (:func:`validate_curve`:
  shape, finite numbers, KL >= 0, at most :data:`MAX_POINTS` rows, at most :data:`MAX_BYTES`).
- everything **derived** from them -- each point's ``sqrt_kl`` and score gains over the start,
  and the Gao et al. (2022) fits ``R(d) = d (alpha - beta log d)`` with their peaks -- is
  recomputed by :func:`verify_curve` with ``rlhf_gym.overopt.fit_curves``, the function
  ``rlhf-gym overopt`` itself derives them with, and compared with the submitted values like the
  other metrics (``validate.compare_metrics``). A disagreement marks the curve (and so the
  submission) as not verified.

Validation runs when the submission is posted (a bad curve is a 422 naming the field); the refit
runs with the rest of the scoring, in the worker (``validate.recompute``), so its verdict is stored
in the same transaction as the submission's other verdicts (``submissions.overopt``). It takes
well under a millisecond, so it needs no queue of its own.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

from .validate import SubmissionError, canonical_json, compare_metrics, is_verified

MAX_POINTS = 200  # kept policies (rows); a run snapshotting every iteration of 200 is already dense
MAX_BYTES = 64 * 1024  # canonical JSON of the compacted table (the committed 6-point example: ~4 KiB)
VIEW_SCHEMA = "rlhf_gym.leaderboard.overopt/1"
POINTS_NOTE = ("Points (KL to the starting policy, proxy and gold score means on held-out prompts) are self-reported: "
               "the server has no checkpoints to re-measure them. sqrt(KL), the gains over the start and the fitted "
               "curves are recomputed here from those points.")

_TOP = {"schema", "created", "run", "env_id", "algo", "settings", "kl_definition", "fit", "proxy", "gold",
        "n_prompts", "rows", "fits"}
_ROW = {"iteration", "kl", "kl_se", "kl_k3", "kl_k3_se", "train_kl", "sqrt_kl", "sample", "greedy"}
_BLOCK = {"n", "proxy_mean", "proxy_se", "gold_mean", "gold_se", "mean_words", "median_words",
          "most_repeated_share", "eos_fraction", "proxy_gain", "gold_gain", "proxy_gain_se", "gold_gain_se"}
_FIT = {"alpha", "beta", "n_points", "r2", "rmse", "peak_sqrt_kl", "peak_kl", "peak_gain", "error"}
# Statistics that may legitimately be undefined (a standard error of one sample, R² of constant
# gains): a non-finite value becomes null when compacting. The points themselves never do.
_OPTIONAL_STATS = {"kl_se", "kl_k3_se", "proxy_se", "gold_se", "proxy_gain_se", "gold_gain_se", "mean_words",
                   "median_words", "most_repeated_share", "eos_fraction", "r2", "rmse"}
_KL_FIELDS = ("kl", "train_kl", "kl_k3")
_DERIVED_ROW = ("sqrt_kl",)
_DERIVED_BLOCK = ("proxy_gain", "gold_gain")
_ENV_BASE = re.compile(r"^(?P<base>.+)-v\d+$")


# ------------------------------------------------------------------------------ client side


def load_curve(path: str | Path) -> dict:
    """The compacted table of ``path``: an ``overopt.json``, or a run directory holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / "overopt.json"
        if not p.is_file():
            raise ValueError(f"--overopt: {path} has no overopt.json; run `rlhf-gym overopt {path}` first")
    elif not p.is_file():
        raise ValueError(f"--overopt: no such file or directory: {path}")
    try:
        report = json.loads(p.read_text(encoding="utf-8"))  # Python's reader: NaN is read, then handled below
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--overopt: {p} is not valid JSON: {err}") from None
    if not isinstance(report, dict):
        raise ValueError(f"--overopt: {p} is not an `rlhf-gym overopt` report (a JSON object)")
    return compact(report)


def compact(report: dict) -> dict:
    """The numbers of an ``rlhf-gym overopt`` report, as a submission carries them: known fields
    only (response texts, per-response scores and checkpoint paths left out), undefined
    optional statistics (:data:`_OPTIONAL_STATS`) as null. Anything else is kept as it is, for
    :func:`validate_curve` to judge."""

    def stat(key: str, value: Any) -> Any:
        if key in _OPTIONAL_STATS and isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    def pick(obj: Any, keys: set[str]) -> Any:
        if not isinstance(obj, dict):
            return obj
        return {k: stat(k, v) for k, v in obj.items() if k in keys}

    out = pick(report, _TOP)
    if isinstance(report.get("rows"), list):
        rows = []
        for row in report["rows"]:
            row = pick(row, _ROW)
            if isinstance(row, dict):
                for decoding in ("sample", "greedy"):
                    if decoding in row:
                        row[decoding] = pick(row[decoding], _BLOCK)
            rows.append(row)
        out["rows"] = rows
    if isinstance(report.get("fits"), dict):
        out["fits"] = {d: ({w: pick(f, _FIT) for w, f in fits.items()} if isinstance(fits, dict) else fits)
                       for d, fits in report["fits"].items()}
    return out


# ------------------------------------------------------------------------------ validation


def _need(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise SubmissionError(path, message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, path: str, *, nullable: bool = False, minimum: float | None = None,
            why_minimum: str = "") -> None:
    if value is None and nullable:
        return
    _need(_is_number(value), path, f"must be a number{' or null' if nullable else ''}, got "
                                   f"{'null' if value is None else type(value).__name__}")
    _need(math.isfinite(value), path, f"must be a finite number, got {value!r}")
    if minimum is not None:
        _need(value >= minimum, path, f"must be >= {minimum:g}, got {value!r}{why_minimum}")


def _string(value: Any, path: str, *, max_len: int, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    _need(isinstance(value, str), path, f"must be a string, got {type(value).__name__}")
    _need(len(value) <= max_len, path, f"longer than {max_len} characters")


def _known(obj: dict, keys: set[str], path: str) -> None:
    extra = sorted(set(obj) - keys)
    _need(not extra, f"{path}.{extra[0]}" if extra else path,
          "unknown field (`rlhf-gym submit --overopt` leaves out texts and per-response scores)")


def _all_finite(obj: Any, path: str) -> None:
    """No NaN or infinity anywhere (JSON has none; Python's reader accepts them)."""
    if isinstance(obj, float):
        _need(math.isfinite(obj), path, f"must be a finite number, got {obj!r}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _all_finite(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _all_finite(v, f"{path}[{i}]")


def decodings_of(settings: dict) -> tuple[str, ...]:
    return ("sample", "greedy") if settings["decoding"] == "both" else (settings["decoding"],)


def validate_curve(curve: Any, env_ids: list[str], path: str = "overopt") -> None:
    """Check a submitted curve's structure; raises SubmissionError naming the first bad field.
    ``env_ids``: the submission's envs (the run's task must be one of them; its version may be
    older: a run is trained once, the suite moves on)."""
    from rlhf_gym.overopt import DECODINGS, KL_SOURCES, SCHEMA

    _need(isinstance(curve, dict), path, "must be an object (the table `rlhf-gym overopt` writes)")
    rows = curve.get("rows")
    _need(isinstance(rows, list) and rows, f"{path}.rows", "must be a non-empty list of points")
    _need(len(rows) <= MAX_POINTS, f"{path}.rows", f"{len(rows)} points, more than the {MAX_POINTS} accepted")
    _all_finite(curve, path)
    size = len(canonical_json(curve).encode("utf-8"))
    _need(size <= MAX_BYTES, path, f"{size} bytes, over the {MAX_BYTES // 1024} KiB limit of a curve "
                                   "(`rlhf-gym submit --overopt` leaves out texts and per-response scores)")
    _known(curve, _TOP, path)
    _need(curve.get("schema") == SCHEMA, f"{path}.schema", f"must be {SCHEMA!r}, got {curve.get('schema')!r}")
    for key, max_len, nullable in (("env_id", 200, False), ("algo", 50, True), ("run", 500, True),
                                   ("created", 50, True), ("kl_definition", 1000, True), ("fit", 1000, True)):
        if key in curve or not nullable:
            _string(curve.get(key), f"{path}.{key}", max_len=max_len, nullable=nullable)
    bases = {(_ENV_BASE.match(e) or {"base": e})["base"]: e for e in env_ids}
    base = (_ENV_BASE.match(curve["env_id"]) or {"base": curve["env_id"]})["base"]
    _need(base in bases, f"{path}.env_id", f"the run's env {curve['env_id']!r} is not one of this submission's tasks "
                                           f"({', '.join(env_ids)})")
    for key in ("proxy", "gold"):
        model = curve.get(key)
        if model is None:
            continue
        _need(isinstance(model, dict), f"{path}.{key}", "must be an object (the model's name, sha256, encoder)")
        for k, v in model.items():
            _string(v, f"{path}.{key}.{k}", max_len=500, nullable=True)
    if curve.get("n_prompts") is not None:
        _need(isinstance(curve["n_prompts"], int) and not isinstance(curve["n_prompts"], bool)
              and curve["n_prompts"] >= 1, f"{path}.n_prompts", "must be a positive integer")

    settings = curve.get("settings")
    _need(isinstance(settings, dict), f"{path}.settings", "required object is missing")
    _need(settings.get("decoding") in DECODINGS, f"{path}.settings.decoding",
          f"must be one of {', '.join(DECODINGS)}, got {settings.get('decoding')!r}")
    _need(settings.get("kl") in KL_SOURCES, f"{path}.settings.kl",
          f"must be one of {', '.join(KL_SOURCES)}, got {settings.get('kl')!r}")
    spp = settings.get("samples_per_prompt")
    _need(isinstance(spp, int) and not isinstance(spp, bool) and spp >= 1, f"{path}.settings.samples_per_prompt",
          f"must be a positive integer, got {spp!r}")
    for k, v in settings.items():
        _need(v is None or isinstance(v, (str, int, float, bool)), f"{path}.settings.{k}", "must be a scalar")
        if isinstance(v, str):
            _string(v, f"{path}.settings.{k}", max_len=500)
    _all_finite(settings, f"{path}.settings")
    decodings = decodings_of(settings)

    seen: set[int] = set()
    used_kl = "kl" if settings["kl"] == "measured" else "train_kl"
    fitted = 0
    for i, row in enumerate(rows):
        rpath = f"{path}.rows[{i}]"
        _need(isinstance(row, dict), rpath, "must be an object")
        _known(row, _ROW, rpath)
        it = row.get("iteration")
        _need(isinstance(it, int) and not isinstance(it, bool) and it >= 0, f"{rpath}.iteration",
              f"must be an integer >= 0, got {it!r}")
        _need(it not in seen, f"{rpath}.iteration", f"duplicate iteration {it}")
        seen.add(it)
        for key in _KL_FIELDS:
            if key in row:
                _number(row[key], f"{rpath}.{key}", nullable=True, minimum=0.0,
                        why_minimum=" (a KL divergence is never negative; an estimate below 0 means the policy "
                                    "barely moved: measure it on more prompts or samples)")
        for key in ("kl_se", "kl_k3_se", "sqrt_kl"):
            if key in row:
                _number(row[key], f"{rpath}.{key}", nullable=True, minimum=0.0)
        if row.get(used_kl) is not None and row[used_kl] > 0:
            fitted += 1
        for decoding in decodings:
            bpath = f"{rpath}.{decoding}"
            block = row.get(decoding)
            _need(isinstance(block, dict), bpath, f"required object is missing (settings.decoding is "
                                                  f"{settings['decoding']!r})")
            _known(block, _BLOCK, bpath)
            n = block.get("n")
            _need(isinstance(n, int) and not isinstance(n, bool) and n >= 1, f"{bpath}.n",
                  f"must be a positive integer, got {n!r}")
            for key in ("proxy_mean", "gold_mean"):
                _number(block.get(key), f"{bpath}.{key}")
            for key in _BLOCK - {"n", "proxy_mean", "gold_mean"}:
                if key in block:
                    _number(block[key], f"{bpath}.{key}", nullable=True,
                            minimum=0.0 if key.endswith("_se") else None)
    _need(0 in seen, f"{path}.rows", "the starting policy (iteration 0) is missing: gains are measured from it")
    _need(fitted >= 2, f"{path}.rows", f"the fit needs at least 2 checkpoints with {used_kl} > 0, got {fitted}")

    fits = curve.get("fits")
    _need(isinstance(fits, dict), f"{path}.fits", "required object is missing")
    for decoding, pair in fits.items():
        fpath = f"{path}.fits.{decoding}"
        _need(decoding in ("sample", "greedy") and isinstance(pair, dict), fpath,
              "must be an object {proxy, gold} under 'sample' or 'greedy'")
        for which, fit in pair.items():
            _need(which in ("proxy", "gold") and isinstance(fit, dict), f"{fpath}.{which}",
                  "must be a fit object under 'proxy' or 'gold'")
            _known(fit, _FIT, f"{fpath}.{which}")
            for k, v in fit.items():
                if k == "error":
                    _string(v, f"{fpath}.{which}.error", max_len=500)
                else:
                    _number(v, f"{fpath}.{which}.{k}", nullable=True)


# ------------------------------------------------------------------------------ verification


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj


def _derived(rows: list[dict], fits: dict, decodings: tuple[str, ...]) -> dict:
    """The derived numbers of a curve, keyed for ``compare_metrics`` (``iteration 10.sample.gold_gain``,
    ``fits.sample.gold.alpha``)."""
    out: dict[str, Any] = {}
    for r in rows:
        entry = {k: r.get(k) for k in _DERIVED_ROW}
        for decoding in decodings:
            entry[decoding] = {k: (r.get(decoding) or {}).get(k) for k in _DERIVED_BLOCK}
        out[f"iteration {r['iteration']}"] = entry
    out["fits"] = fits
    return out


def verify_curve(curve: dict) -> dict:
    """Re-derive a validated curve from its points with ``rlhf_gym.overopt.fit_curves`` and
    compare; returns the view stored with the submission and served by the API."""
    from rlhf_gym.overopt import fit_curves

    settings = curve["settings"]
    decodings = decodings_of(settings)
    submitted = sorted(curve["rows"], key=lambda r: r["iteration"])
    points = copy.deepcopy(submitted)
    for r in points:  # only the measured numbers go in; every derived one comes out of fit_curves
        for k in _DERIVED_ROW:
            r.pop(k, None)
        for decoding in decodings:
            for k in _DERIVED_BLOCK + ("proxy_gain_se", "gold_gain_se"):
                r[decoding].pop(k, None)
    fits = _finite_or_none(fit_curves(points, settings))
    points = _finite_or_none(points)
    # The paired standard errors of the gains need per-response scores, which a submission does not
    # carry: they stay as submitted (self-reported, like the points), for the error bars.
    for r, s in zip(points, submitted):
        for decoding in decodings:
            for k in ("proxy_gain_se", "gold_gain_se"):
                r[decoding][k] = s[decoding].get(k)
    comparison = compare_metrics(_derived(submitted, curve["fits"], decodings), _derived(points, fits, decodings))
    shown = decodings[0]
    gold_fit = fits.get(shown, {}).get("gold", {})
    peak = ({k: gold_fit[k] for k in ("peak_sqrt_kl", "peak_kl", "peak_gain")}
            if gold_fit.get("peak_kl") is not None else None)
    return {"schema": VIEW_SCHEMA, "note": POINTS_NOTE, "points_verified": False,
            "fit_verified": is_verified(comparison), "env_id": curve["env_id"], "algo": curve.get("algo"),
            "run": curve.get("run"), "settings": settings, "kl_definition": curve.get("kl_definition"),
            "proxy": curve.get("proxy"), "gold": curve.get("gold"), "n_prompts": curve.get("n_prompts"),
            "decoding": shown, "rows": points, "fits": fits, "gold_peak": peak, "comparison": comparison}


def mismatches(view: dict | None) -> dict:
    return {} if view is None else {k: v for k, v in view["comparison"].items() if v["status"] != "match"}
