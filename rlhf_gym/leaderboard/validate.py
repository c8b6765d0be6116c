"""Submission format, structural validation and metric recomputation.

A submission wraps one ``rlhf-gym bench`` results JSON (generations included) with agent
metadata::

    {"submission_version": 1,
     "meta": {"name": ..., "description": ..., "model": ..., "url": ..., "seeds": [0, 1]},
     "results": {...results JSON, schema_version 1...},
     "overopt": {...}}   # optional: the training run's over-optimisation table (overopt_curve.py)

Its id is the sha256 of its canonical JSON, so an identical resubmission maps to the same
row. Metrics are recomputed from the generations with the scorer installed here; the
submitted values are only compared against them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

SUBMISSION_VERSION = 1
REL_TOL = 1e-6
# Means of neural-model scores (reward_mean, score_mean) recomputed in another process differ in
# the last float bits: an embedding's rounding depends on the batch it was computed in (padding
# length), and a reward head sums hundreds of such features. Measured across processes on the 21
# submissions of benchmarks/leaderboard_burst.py: up to 1.8e-6 (Translation-v1 reward_mean, values
# around -0.34), which REL_TOL alone flagged as a mismatch. Text metrics (BLEU, chrF, ROUGE) are
# exact. A tampered value that moves a metric by less than 1e-5 changes no ranking.
ABS_TOL = 1e-5
MAX_TEXT = 100_000
_ENV_ID = re.compile(r"^(?P<base>.+)-v(?P<version>\d+)$")


class ScoringUnavailable(RuntimeError):
    """The server itself cannot score an env (e.g. a model file missing): not the
    submitter's fault, so it must not read as a rejection."""


class SubmissionError(ValueError):
    """A submission that cannot be accepted; ``field`` is a JSON path to the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(doc: dict) -> str:
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


def build_submission(results: dict, *, name: str | None = None, description: str = "",
                     model: str = "", url: str = "", seeds: list[int] | None = None) -> dict:
    """Wrap a results JSON with agent metadata (defaults taken from ``results['agent']``)."""
    if "submission_version" in results:
        return results  # already a submission
    agent = results.get("agent") or {}
    meta = {
        "name": name or agent.get("name") or agent.get("spec") or "",
        "description": description,
        "model": model or agent.get("spec") or "",
        "url": url,
        "seeds": list(seeds or []),
    }
    return {"submission_version": SUBMISSION_VERSION, "meta": meta, "results": results}


def _need(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise SubmissionError(path, message)


def _str_field(obj: dict, key: str, path: str, *, required: bool, max_len: int) -> str:
    value = obj.get(key, None if required else "")
    _need(value is not None, f"{path}.{key}", "required field is missing")
    _need(isinstance(value, str), f"{path}.{key}", f"must be a string, got {type(value).__name__}")
    _need(len(value) <= max_len, f"{path}.{key}", f"longer than {max_len} characters")
    return value


def _first_non_finite(obj: Any, path: str = "") -> tuple[str, float] | None:
    """The JSON path and value of the first NaN or infinity in ``obj`` (Python's json module reads
    them, standard JSON and the stored documents have none)."""
    stack = [(path, obj)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return where, item
        if isinstance(item, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(item))))
    return None


def validate_structure(doc: Any, *, schema_version: int = 1) -> None:
    """Check shape and types; raises SubmissionError naming the first bad field."""
    _need(isinstance(doc, dict), "$", "submission must be a JSON object")
    bad = _first_non_finite(doc)
    if bad is not None:
        raise SubmissionError(bad[0], f"must be a finite number, got {bad[1]!r} (standard JSON has no NaN or "
                                      "Infinity; use null for a missing value)")
    allowed = {"submission_version", "meta", "results", "overopt"}
    extra = sorted(set(doc) - allowed)
    _need(not extra, f"$.{extra[0]}" if extra else "$", "unknown top-level field")
    _need(doc.get("submission_version") == SUBMISSION_VERSION, "submission_version",
          f"must be {SUBMISSION_VERSION}, got {doc.get('submission_version')!r}")

    meta = doc.get("meta")
    _need(isinstance(meta, dict), "meta", "required object is missing")
    name = _str_field(meta, "name", "meta", required=True, max_len=100)
    _need(bool(name.strip()), "meta.name", "must not be empty")
    _str_field(meta, "description", "meta", required=False, max_len=5000)
    _str_field(meta, "model", "meta", required=False, max_len=500)
    url = _str_field(meta, "url", "meta", required=False, max_len=2000)
    # The URL is rendered as a link: only http(s) keeps javascript: URLs off the page.
    _need(url == "" or url.startswith(("http://", "https://")), "meta.url", "must start with http:// or https://")
    seeds = meta.get("seeds", [])
    _need(isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
          "meta.seeds", "must be a list of integers")
    extra = sorted(set(meta) - {"name", "description", "model", "url", "seeds"})
    _need(not extra, f"meta.{extra[0]}" if extra else "meta", "unknown field")

    results = doc.get("results")
    _need(isinstance(results, dict), "results", "required object is missing")
    _need(results.get("schema_version") == schema_version, "results.schema_version",
          f"must be {schema_version}, got {results.get('schema_version')!r}")
    envs = results.get("envs")
    _need(isinstance(envs, dict) and len(envs) > 0, "results.envs", "must be a non-empty object")
    for env_id, block in envs.items():
        path = f"results.envs[{env_id!r}]"
        _need(isinstance(block, dict), path, "must be an object")
        _need(block.get("env_id") == env_id, f"{path}.env_id", f"must equal its key {env_id!r}")
        _need(block.get("split", "test") == "test", f"{path}.split",
              f"the leaderboard ranks the test split only, got {block.get('split')!r}")
        _need(isinstance(block.get("metrics"), dict), f"{path}.metrics", "required object is missing")
        gens = block.get("generations")
        _need(isinstance(gens, list) and len(gens) > 0, f"{path}.generations", "must be a non-empty list")
        seen: set[str] = set()
        for i, gen in enumerate(gens):
            gpath = f"{path}.generations[{i}]"
            _need(isinstance(gen, dict), gpath, "must be an object")
            _need(isinstance(gen.get("id"), str), f"{gpath}.id", "required string is missing")
            _need(isinstance(gen.get("prediction"), str), f"{gpath}.prediction", "required string is missing")
            _need(len(gen["prediction"]) <= MAX_TEXT, f"{gpath}.prediction", f"longer than {MAX_TEXT} characters")
            _need(gen["id"] not in seen, f"{gpath}.id", f"duplicate example id {gen['id']!r}")
            seen.add(gen["id"])
    if "overopt" in doc:
        from .overopt_curve import validate_curve

        validate_curve(doc["overopt"], list(envs))


def check_env_ids(doc: dict, known: list[str]) -> None:
    """Unknown ids and known ids at another version get distinct messages."""
    known_set = set(known)
    versions: dict[str, list[str]] = {}
    for k in known:
        m = _ENV_ID.match(k)
        if m:
            versions.setdefault(m["base"], []).append(k)
    for env_id in doc["results"]["envs"]:
        if env_id in known_set:
            continue
        m = _ENV_ID.match(env_id)
        if m and m["base"] in versions:
            raise SubmissionError(f"results.envs[{env_id!r}]",
                                  f"unknown version of {m['base']}; this server scores {', '.join(versions[m['base']])}")
        raise SubmissionError(f"results.envs[{env_id!r}]",
                              f"unknown env id; this server knows {', '.join(sorted(known_set)) or 'none'}")


# -- recomputation ---------------------------------------------------------------------------


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = obj
    return out


def _same(a: Any, b: Any) -> bool:
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return a == b


# Models whose identity (name, hash, encoder) a verified result must share with the server's.
JUDGE_IDENTITIES = ("reward_model", "judge", "reference_judge")


def compare_metrics(submitted: dict, recomputed: dict) -> dict[str, dict]:
    """Per flattened metric path: submitted value, recomputed value and a status:
    ``match``, ``mismatch``, ``missing`` (recomputed here, absent from the submission) or
    ``unverifiable`` (claimed, but this server cannot recompute it, e.g. a win rate against
    an agent whose generations were not submitted)."""
    sub, rec = _flatten(submitted), _flatten(recomputed)
    rows: dict[str, dict] = {}
    for key in sorted(set(sub) | set(rec)):
        s, r = sub.get(key), rec.get(key)
        if key not in sub:
            status = "missing"
        elif r is None and s is not None:
            status = "unverifiable"
        elif _same(s, r):
            status = "match"
        else:
            status = "mismatch"
        rows[key] = {"submitted": s, "recomputed": r, "status": status}
    return rows


def is_verified(comparison: dict[str, dict]) -> bool:
    return all(row["status"] == "match" for row in comparison.values())


@dataclass
class EnvVerdict:
    env_id: str
    task: str
    submitted_metrics: dict
    recomputed_metrics: dict
    comparison: dict
    verified: bool
    generations: list[dict] = field(repr=False)


@dataclass
class Verdict:
    id: str
    doc: dict
    envs: list[EnvVerdict]
    scorer_info: dict
    overopt: dict | None = None  # the attached curve's view (overopt_curve.verify_curve), if any

    @property
    def verified(self) -> bool:
        return all(e.verified for e in self.envs) and (self.overopt is None or self.overopt["fit_verified"])

    @property
    def mismatches(self) -> dict[str, dict[str, dict]]:
        """Per env (and under ``"overopt"`` for an attached curve) the metrics that do not match."""
        from .overopt_curve import mismatches

        out = {e.env_id: {k: v for k, v in e.comparison.items() if v["status"] != "match"} for e in self.envs}
        if self.overopt is not None:
            out["overopt"] = mismatches(self.overopt)
        return out


Scorer = Callable[..., dict]


def _predictions(block: dict) -> tuple[list[dict], list[dict] | None]:
    """The submitted predictions of one env, and the ``--vs`` agent's when every generation
    carries one (a win rate against another agent is recomputable only then)."""
    preds = [{"id": g["id"], "prediction": g["prediction"]} for g in block["generations"]]
    vs = None
    if all(isinstance(g.get("vs_prediction"), str) for g in block["generations"]):
        vs = [{"id": g["id"], "prediction": g["vs_prediction"]} for g in block["generations"]]
    return preds, vs


def recompute(doc: dict, scorer: Scorer, *, scorer_info: dict | None = None, **score_kwargs: Any) -> Verdict:
    """Score every env of a validated submission; the scorer's ValueError (missing or
    extra example ids, unknown env) becomes a SubmissionError naming the env. ``score_kwargs``
    (``limit``, ``cache``) go to the scorer."""
    envs = []
    for env_id, block in doc["results"]["envs"].items():
        preds, vs = _predictions(block)
        try:
            fresh = scorer(env_id, preds, split="test", vs_predictions=vs, **score_kwargs)
        except ValueError as err:
            raise SubmissionError(f"results.envs[{env_id!r}].generations", str(err)) from err
        except (OSError, RuntimeError, ImportError) as err:
            raise ScoringUnavailable(f"this server cannot score {env_id} right now: {err}") from err
        rec_metrics = fresh.get("metrics") or {}
        # The reward model and judge identities are compared too: numbers produced with another
        # judge are not comparable even when they happen to agree.
        comparison = compare_metrics(
            {**block["metrics"], **{k: block.get(k) for k in JUDGE_IDENTITIES if k in fresh}},
            {**rec_metrics, **{k: fresh[k] for k in JUDGE_IDENTITIES if k in fresh}})
        gens = _merge_generations(block["generations"], fresh.get("generations") or [])
        envs.append(EnvVerdict(env_id=env_id, task=str(fresh.get("task") or block.get("task") or ""),
                               submitted_metrics=block["metrics"], recomputed_metrics=rec_metrics,
                               comparison=comparison, verified=is_verified(comparison), generations=gens))
    curve = None
    if doc.get("overopt") is not None:
        from .overopt_curve import verify_curve

        curve = verify_curve(doc["overopt"])  # the points cannot be re-measured; what is derived from them can
    return Verdict(id=content_hash(doc), doc=doc, envs=envs, scorer_info=scorer_info or {}, overopt=curve)


def _merge_generations(submitted: list[dict], fresh: list[dict]) -> list[dict]:
    """Prompt and references come from the server's own data (the submitted copies could
    be edited); prediction from the submission; reward and judge score recomputed."""
    by_id = {g.get("id"): g for g in fresh}
    out = []
    for g in submitted:
        f = by_id.get(g["id"], {})
        out.append({"id": g["id"], "prompt": f.get("prompt", g.get("prompt", "")),
                    "prediction": g["prediction"], "references": f.get("references", g.get("references", [])),
                    "reward": f.get("reward"), "judge_score": f.get("judge_score")})
    return out


def default_scorer() -> tuple[Scorer, Callable[[], list[str]], int, dict]:
    """The core's scoring function, env list, results schema version and a description of
    what scored (package versions), so a stored verdict says which code produced it."""
    try:
        from rlhf_gym import evaluation
    except ImportError as err:
        raise RuntimeError(f"rlhf_gym.evaluation is not available ({err}); cannot recompute metrics") from err
    import rlhf_gym

    info = {"rlhf_gym_version": rlhf_gym.__version__}
    if hasattr(evaluation, "package_versions"):
        info["packages"] = evaluation.package_versions()
    return evaluation.score_predictions, evaluation.list_env_ids, evaluation.RESULTS_SCHEMA_VERSION, info


def default_precheck(limit: int | None = None) -> Callable[[dict], None]:
    """Checks, without scoring, that each env's generations name exactly the example ids of its
    test split (its first ``limit`` examples when the server scores a limited suite) and are valid
    actions of the env, with the core's own rules (``evaluation.align_predictions``,
    ``envs.text_env.check_responses``, which scoring applies too), so such a submission is refused
    with 422 when it is posted rather than failing later in the queue."""
    from rlhf_gym.envs.text_env import check_responses
    from rlhf_gym.evaluation import align_predictions, bench_task

    def precheck(doc: dict) -> None:
        for env_id, block in doc["results"]["envs"].items():
            task = bench_task(env_id)
            examples = task.examples("test")
            if limit is not None:
                examples = examples[:limit]
            preds, vs = _predictions(block)
            try:
                ids = [ex.id for ex in examples]
                check_responses(ids, align_predictions(examples, preds), task.max_response_chars, "predictions")
                if vs is not None:
                    check_responses(ids, align_predictions(examples, vs, "vs predictions"), task.max_response_chars,
                                    "vs predictions")
            except ValueError as err:
                raise SubmissionError(f"results.envs[{env_id!r}].generations", str(err)) from err

    def guarded(doc: dict) -> None:
        try:
            precheck(doc)
        except (OSError, RuntimeError, ImportError) as err:  # the server's data, not the submission
            raise ScoringUnavailable(f"this server cannot read its test data right now: {err}") from err

    return guarded
