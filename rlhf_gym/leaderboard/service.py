"""Submission intake and leaderboard queries, shared by the HTTP server, the CLI and the
static site builder."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import jobs
from .db import Database, DbScoreCache
from .overopt_curve import mismatches as curve_mismatches
from .validate import (
    Scorer,
    ScoringUnavailable,
    SubmissionError,
    Verdict,
    canonical_json,
    check_env_ids,
    default_precheck,
    default_scorer,
    recompute,
    validate_structure,
)

log = logging.getLogger("rlhf_gym.leaderboard")

# Ranking metric per task (higher is better). The overall ranking uses the length-controlled win
# rate against the task's baseline agent (rlhf_gym.winrate), which asks the same question on every
# task; the win rate against the reference does not (a reference-reading judge pins it near 0).
PRIMARY = {"translation": "bleu", "summarization": "rougeL", "dialogue": "lc_vs_baseline"}


@dataclass
class Outcome:
    id: str
    created: bool  # False: identical content was already stored or queued
    status: str = "pending"  # pending | verified | mismatch | failed
    verified: bool | None = None  # None until scored
    mismatches: dict | None = None
    error: dict | None = None  # for failed: {"kind", "field", "message"}
    requeued: bool = False  # a failed job put back in the queue by this identical resubmission


class Verifier:
    """Validates and recomputes; scoring runs outside any DB transaction and at most
    ``max_parallel`` at a time (scoring is CPU/memory heavy, the write is quick).

    ``limit``: score only the first ``limit`` test examples of each env (a small suite for demos
    and load tests; ``rlhf-gym bench --limit N`` writes matching submissions); recorded in
    ``scorer_info``. ``precheck(doc)`` runs when a submission is posted and raises
    SubmissionError for what would certainly fail scoring (by default: example ids that do not
    match the split)."""

    def __init__(self, scorer: Scorer | None = None, env_ids: Callable[[], list[str]] | None = None,
                 schema_version: int | None = None, scorer_info: dict | None = None, max_parallel: int = 2,
                 limit: int | None = None, precheck: Callable[[dict], None] | None = None):
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive number of examples, got {limit}")
        if scorer is None or env_ids is None or schema_version is None:
            d_scorer, d_envs, d_version, d_info = default_scorer()
            if scorer is None and precheck is None:
                precheck = default_precheck(limit)
            scorer = scorer or d_scorer
            env_ids = env_ids or d_envs
            schema_version = d_version if schema_version is None else schema_version
            scorer_info = scorer_info or d_info
        self.scorer = scorer
        self.env_ids = env_ids
        self.schema_version = schema_version
        self.scorer_info = dict(scorer_info or {})
        self.limit = limit
        if limit is not None:
            self.scorer_info["limit"] = limit
        self.precheck = precheck
        self._slots = threading.BoundedSemaphore(max_parallel)

    def check(self, doc: Any) -> None:
        validate_structure(doc, schema_version=self.schema_version)
        check_env_ids(doc, list(self.env_ids()))
        if self.precheck is not None:
            self.precheck(doc)

    def verify(self, doc: Any, *, cache=None) -> Verdict:
        self.check(doc)
        kwargs: dict[str, Any] = {}
        if self.limit is not None:
            kwargs["limit"] = self.limit
        if cache is not None:
            kwargs["cache"] = cache
        with self._slots:
            return recompute(doc, self.scorer, scorer_info=self.scorer_info, **kwargs)


class Leaderboard:
    """Intake (``accept``: validate and queue), scoring (``run_job``, called by a
    ``jobs.ScoringWorker``) and queries. ``cache``: keep per-example scores in the database's
    ``score_cache`` table so identical generations are never rescored."""

    def __init__(self, db: Database, verifier: Verifier, *, cache: bool = True):
        self.db = db
        self.verifier = verifier
        self.cache = DbScoreCache(db) if cache else None

    # -- intake ----------------------------------------------------------------------------

    def accept(self, doc: Any, *, user: str | None, source: str = "api") -> Outcome:
        """Validate the structure (and example ids) and queue the submission for scoring; an
        identical document already stored or queued is not queued again."""
        try:
            self.verifier.check(doc)
        except SubmissionError as err:
            self._audit_reject(user, err)
            raise
        document = canonical_json(doc)
        sid = hashlib.sha256(document.encode("utf-8")).hexdigest()  # == validate.content_hash(doc)
        meta = doc["meta"]
        with self.db.tx(write=True) as tx:
            scored = self._scored(tx, sid)
            if scored is not None:
                tx.audit(user, "submission.resubmit", sid, {})
                return scored
            if jobs.enqueue(tx, sid, document=document, meta=json.dumps(meta, ensure_ascii=False), user=user,
                            source=source):
                tx.audit(user, "submission.accept", sid, {"name": meta["name"], "source": source})
                return Outcome(id=sid, created=True)
            job = jobs.get(tx, sid)
            if job["status"] == "done":  # scored and committed since _scored() read (PostgreSQL, READ COMMITTED)
                tx.audit(user, "submission.resubmit", sid, {})
                return self._scored(tx, sid)
            if job["status"] == "failed" and job["error_kind"] in jobs.RETRYABLE:
                jobs.requeue(tx, sid)
                tx.audit(user, "submission.requeue", sid, {"previous_error": job["error_kind"]})
                return Outcome(id=sid, created=False, requeued=True)
            tx.audit(user, "submission.resubmit", sid, {"status": job["status"]})
            return _job_outcome(job, created=False)

    def run_job(self, job: jobs.Job) -> Outcome:
        """Score one claimed job and record the result (or the failure) under its lease."""
        doc = json.loads(job.document)
        try:
            verdict = self.verifier.verify(doc, cache=self.cache)
        except SubmissionError as err:
            return self._fail(job, "rejected", err.message, err.field)
        except ScoringUnavailable as err:
            return self._fail(job, "unavailable", str(err))
        except jobs.LeaseLost:
            raise
        except Exception as err:  # a bug or a resource error: record it, keep the worker alive
            log.exception("scoring submission %s failed", job.submission_id)
            return self._fail(job, "crashed", f"{type(err).__name__}: {err}")
        return self._store(verdict, job)

    def submit(self, doc: Any, *, user: str | None, source: str = "api", timeout: float = 3600) -> Outcome:
        """Accept and score now, in this thread (static builds, scripts). A failed scoring raises
        what the worker recorded: SubmissionError or ScoringUnavailable."""
        out = self.accept(doc, user=user, source=source)
        if out.status == "pending":
            worker = jobs.ScoringWorker(self)
            deadline = time.monotonic() + timeout
            # The job may be leased by a worker thread of a running server: then wait for it.
            while not worker.run_once(out.id):
                current = self.status(out.id)
                if current is None or current.status != "pending":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"submission {out.id} still pending after {timeout:g} s")
                time.sleep(0.2)
            current = self.status(out.id)
            out = Outcome(**{**current.__dict__, "created": out.created, "requeued": out.requeued})
        if out.status == "failed":
            err = out.error or {}
            if err.get("kind") == "rejected":
                raise SubmissionError(err.get("field") or "$", err.get("message") or "rejected by the scorer")
            raise ScoringUnavailable(err.get("message") or "scoring failed")
        return out

    def _scored(self, tx, sid: str) -> Outcome | None:
        row = tx.one("SELECT id, verified, overopt FROM submissions WHERE id = ?", (sid,))
        if row is None:
            return None
        envs = tx.all("SELECT env_id, comparison FROM submission_envs WHERE submission_id = ?", (sid,))
        verified = bool(row["verified"])
        mismatches = _mismatches(envs)
        if row["overopt"]:
            mismatches["overopt"] = curve_mismatches(json.loads(row["overopt"]))
        return Outcome(id=sid, created=False, status="verified" if verified else "mismatch", verified=verified,
                       mismatches=mismatches)

    def status(self, sid: str) -> Outcome | None:
        with self.db.tx() as tx:
            # Job first: a job seen pending may be completed before the next statement (each
            # statement has its own snapshot under PostgreSQL's READ COMMITTED), and then the
            # submissions row, written in the same transaction as "done", is visible.
            job = jobs.get(tx, sid)
            scored = self._scored(tx, sid)
        if scored is not None:
            return scored
        return None if job is None else _job_outcome(job, created=False)

    def _store(self, verdict: Verdict, job: jobs.Job) -> Outcome:
        meta = verdict.doc["meta"]
        with self.db.tx(write=True) as tx:
            jobs.finish(tx, job, "done")  # raises LeaseLost (and rolls back) if another worker took over
            # The primary key keeps a row written before the queue existed from being duplicated.
            inserted = tx.execute(
                "INSERT INTO submissions (id, user_name, source, name, description, model, url, seeds, created,"
                " verified, scorer, document, overopt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (verdict.id, job.user_name, job.source, meta["name"], meta.get("description", ""),
                 meta.get("model", ""), meta.get("url", ""), json.dumps(meta.get("seeds", [])), job.created,
                 int(verdict.verified), json.dumps(verdict.scorer_info, sort_keys=True), canonical_json(verdict.doc),
                 None if verdict.overopt is None else canonical_json(verdict.overopt)),
            )
            if inserted == 1:
                for env in verdict.envs:
                    tx.execute(
                        "INSERT INTO submission_envs (submission_id, env_id, task, submitted_metrics,"
                        " recomputed_metrics, comparison, verified, generations) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (verdict.id, env.env_id, env.task, json.dumps(env.submitted_metrics),
                         json.dumps(env.recomputed_metrics), json.dumps(env.comparison), int(env.verified),
                         json.dumps(env.generations, ensure_ascii=False)),
                    )
                tx.audit(job.user_name, "submission.create", verdict.id,
                         {"name": meta["name"], "source": job.source, "verified": verdict.verified,
                          "mismatches": {e: sorted(m) for e, m in verdict.mismatches.items() if m}})
            else:
                tx.audit(job.user_name, "submission.resubmit", verdict.id, {"raced": True})
        return Outcome(id=verdict.id, created=inserted == 1, status="verified" if verdict.verified else "mismatch",
                       verified=verdict.verified, mismatches=verdict.mismatches)

    def _fail(self, job: jobs.Job, kind: str, message: str, field: str | None = None) -> Outcome:
        message = message[:2000]
        with self.db.tx(write=True) as tx:
            jobs.finish(tx, job, "failed", error_kind=kind, error_field=field, error=message)
            tx.audit(job.user_name, "submission.fail", job.submission_id, {"kind": kind, "field": field,
                                                                          "message": message[:500]})
        return Outcome(id=job.submission_id, created=False, status="failed",
                       error={"kind": kind, "field": field, "message": message})

    def _audit(self, user: str | None, action: str, obj: str | None, details: dict) -> None:
        with self.db.tx(write=True) as tx:
            tx.audit(user, action, obj, details)

    def _audit_reject(self, user: str | None, err: SubmissionError) -> None:
        self._audit(user, "submission.reject", None, {"field": err.field, "message": err.message[:500]})

    # -- queries ---------------------------------------------------------------------------

    def submission(self, sid: str) -> dict | None:
        """A scored submission with every env's metrics, comparison and generations; a queued or
        failed one with its metadata, status and error (``verified`` None, no envs yet)."""
        with self.db.tx() as tx:
            job = jobs.get(tx, sid)  # before the submissions row: see status()
            row = tx.one("SELECT * FROM submissions WHERE id = ?", (sid,))
            if row is None:
                return None if job is None else _job_view(job)
            envs = tx.all("SELECT * FROM submission_envs WHERE submission_id = ? ORDER BY env_id", (sid,))
        out = {k: row[k] for k in ("id", "user_name", "source", "name", "description", "model", "url", "created")}
        out["seeds"] = json.loads(row["seeds"])
        out["verified"] = bool(row["verified"])
        out["status"] = "verified" if out["verified"] else "mismatch"
        out["scorer"] = json.loads(row["scorer"])
        # The attached over-optimisation curve: self-reported points, fits recomputed here (None: no curve,
        # or a row stored before curves existed).
        out["overopt"] = json.loads(row["overopt"]) if row.get("overopt") else None
        out["envs"] = {}
        for e in envs:
            out["envs"][e["env_id"]] = {
                "task": e["task"], "verified": bool(e["verified"]),
                "metrics": json.loads(e["recomputed_metrics"]),
                "submitted_metrics": json.loads(e["submitted_metrics"]),
                "comparison": json.loads(e["comparison"]),
                "generations": json.loads(e["generations"]),
            }
        return out

    def rows(self) -> list[dict]:
        """One row per (submission, env) with the recomputed metrics; ``verified`` is the env's,
        ``submission_verified`` the whole submission's (its other envs and its attached curve)."""
        with self.db.tx() as tx:
            rows = tx.all(
                "SELECT s.id, s.name, s.model, s.created, e.env_id, e.task, e.recomputed_metrics, e.verified,"
                " s.verified AS submission_verified"
                " FROM submissions s JOIN submission_envs e ON e.submission_id = s.id ORDER BY s.created")
        return [table_row(r["id"], r["name"], r["model"], r["created"], r["env_id"], r["task"],
                          json.loads(r["recomputed_metrics"]), bool(r["verified"]),
                          submission_verified=bool(r["submission_verified"])) for r in rows]

    def curves(self, order: list[str] | None = None) -> list[dict]:
        """``{"id", "name", "overopt"}`` of the scored submissions that carry an over-optimisation
        curve, in the order of ``order`` (submission ids, e.g. the overall ranking), else by date."""
        with self.db.tx() as tx:
            rows = tx.all("SELECT id, name, overopt FROM submissions WHERE overopt IS NOT NULL ORDER BY created")
        out = [{"id": r["id"], "name": r["name"], "overopt": json.loads(r["overopt"])} for r in rows]
        if order is not None:
            rank = {sid: i for i, sid in enumerate(order)}
            out.sort(key=lambda c: rank.get(c["id"], len(rank)))
        return out

    def board(self) -> dict:
        queue = jobs.counts(self.db)  # first: a job done after this count is then in the rows
        return {**build_board(self.rows()), "queue": queue}


def _job_outcome(job: dict, *, created: bool) -> Outcome:
    error = None
    if job["status"] == "failed":
        error = {"kind": job["error_kind"], "field": job["error_field"], "message": job["error"]}
    return Outcome(id=job["submission_id"], created=created, status=job["status"], error=error)


def _job_view(job: dict) -> dict:
    meta = json.loads(job["meta"])
    out = {"id": job["submission_id"], "user_name": job["user_name"], "source": job["source"],
           "name": meta.get("name", ""), "description": meta.get("description", ""), "model": meta.get("model", ""),
           "url": meta.get("url", ""), "seeds": meta.get("seeds", []), "created": job["created"],
           "status": job["status"], "verified": None, "attempts": int(job["attempts"]),
           "scoring": job["status"] == "pending" and job["lease_expires"] is not None
           and float(job["lease_expires"]) >= time.time(), "envs": {}, "overopt": None}
    if job["status"] == "failed":
        out["error"] = {"kind": job["error_kind"], "field": job["error_field"], "message": job["error"]}
    return out


def _mismatches(envs: list[dict]) -> dict:
    out = {}
    for e in envs:
        comp = json.loads(e["comparison"])
        out[e["env_id"]] = {k: v for k, v in comp.items() if v["status"] != "match"}
    return out


def table_row(sid: str, name: str, model: str, created: str, env_id: str, task: str,
              metrics: dict, verified: bool, *, submission_verified: bool | None = None) -> dict:
    wr = metrics.get("win_rate_vs_reference") or {}
    lc = metrics.get("lc_win_rate_vs_baseline") or {}
    length = metrics.get("length") or {}
    return {
        "id": sid, "name": name, "model": model, "date": created[:10], "env_id": env_id, "task": task,
        "bleu": metrics.get("bleu"), "chrf": metrics.get("chrf"), "rougeL": metrics.get("rougeL"),
        "reward": metrics.get("reward_mean"),
        "win_rate": wr.get("mean"), "win_rate_ci": [wr.get("ci_low"), wr.get("ci_high")], "n": wr.get("n"),
        "lc_vs_baseline": lc.get("mean"), "lc_vs_baseline_ci": [lc.get("ci_low"), lc.get("ci_high")],
        "mean_words": length.get("mean_words"), "verified": verified,
        "submission_verified": verified if submission_verified is None else submission_verified,
    }


def _key(value: Any) -> float:
    return float("-inf") if value is None else float(value)


def build_board(rows: list[dict]) -> dict:
    """Per-env tables sorted by the task's primary metric, plus an overall table ranked by the
    number of envs covered, then the mean over them of the LC win rate against each task's
    baseline agent (``rlhf_gym.winrate.combine_env_rates``: mean and 95% interval; a
    submission whose results predate that metric has none and ranks last)."""
    from rlhf_gym.winrate import combine_env_rates

    per_env: dict[str, list[dict]] = {}
    for r in rows:
        per_env.setdefault(r["env_id"], []).append(r)
    for env_id, items in per_env.items():
        metric = PRIMARY.get(items[0]["task"], "win_rate")
        items.sort(key=lambda r: _key(r.get(metric)), reverse=True)
    overall: dict[str, dict] = {}
    for r in rows:
        o = overall.setdefault(r["id"], {"id": r["id"], "name": r["name"], "model": r["model"], "date": r["date"],
                                         "envs": [], "verified": True, "_wr": [], "_len": [], "_rw": [], "_lc": []})
        o["envs"].append(r["env_id"])
        o["_lc"].append({"mean": r["lc_vs_baseline"], "ci_low": r["lc_vs_baseline_ci"][0],
                         "ci_high": r["lc_vs_baseline_ci"][1]} if r.get("lc_vs_baseline") is not None else None)
        # A submission's own verdict also covers what belongs to no env (an attached over-optimisation curve).
        o["verified"] = o["verified"] and r["verified"] and r["submission_verified"]
        if r["win_rate"] is not None:
            o["_wr"].append(r["win_rate"])
        if r["mean_words"] is not None:
            o["_len"].append(r["mean_words"])
        if r["reward"] is not None:
            o["_rw"].append(r["reward"])
    table = []
    for o in overall.values():
        o["win_rate"] = sum(o["_wr"]) / len(o["_wr"]) if o["_wr"] else None
        o["mean_words"] = sum(o["_len"]) / len(o["_len"]) if o["_len"] else None
        o["reward"] = sum(o["_rw"]) / len(o["_rw"]) if o["_rw"] else None
        score = combine_env_rates(o["_lc"])
        o["lc_vs_baseline"] = score["mean"] if score else None
        o["lc_vs_baseline_ci"] = [score["ci_low"], score["ci_high"]] if score else [None, None]
        for k in ("_wr", "_len", "_rw", "_lc"):
            del o[k]
        table.append(o)
    table.sort(key=lambda o: (len(o["envs"]), _key(o["lc_vs_baseline"])), reverse=True)
    return {"overall": table, "envs": dict(sorted(per_env.items())),
            "primary": {env: PRIMARY.get(items[0]["task"], "win_rate") for env, items in per_env.items()}}
