"""Submission intake and leaderboard queries, shared by the HTTP server, the CLI and the
static site builder."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Callable

from .db import Database, utcnow
from .validate import (
    Scorer,
    SubmissionError,
    Verdict,
    check_env_ids,
    content_hash,
    canonical_json,
    default_scorer,
    recompute,
    validate_structure,
)

# Ranking metric per task (higher is better); overall ranking uses the judge win rate,
# the only metric that is comparable across tasks.
PRIMARY = {"translation": "bleu", "summarization": "rougeL", "dialogue": "win_rate"}


@dataclass
class Outcome:
    id: str
    created: bool  # False: identical content was already stored
    verified: bool
    mismatches: dict


class Verifier:
    """Validates and recomputes; scoring runs outside any DB transaction and at most
    ``max_parallel`` at a time (scoring is CPU/memory heavy, the write is quick)."""

    def __init__(self, scorer: Scorer | None = None, env_ids: Callable[[], list[str]] | None = None,
                 schema_version: int | None = None, scorer_info: dict | None = None, max_parallel: int = 2):
        if scorer is None or env_ids is None or schema_version is None:
            d_scorer, d_envs, d_version, d_info = default_scorer()
            scorer = scorer or d_scorer
            env_ids = env_ids or d_envs
            schema_version = d_version if schema_version is None else schema_version
            scorer_info = scorer_info or d_info
        self.scorer = scorer
        self.env_ids = env_ids
        self.schema_version = schema_version
        self.scorer_info = scorer_info or {}
        self._slots = threading.BoundedSemaphore(max_parallel)

    def check(self, doc: Any) -> None:
        validate_structure(doc, schema_version=self.schema_version)
        check_env_ids(doc, list(self.env_ids()))

    def verify(self, doc: Any) -> Verdict:
        self.check(doc)
        with self._slots:
            return recompute(doc, self.scorer, scorer_info=self.scorer_info)


class Leaderboard:
    def __init__(self, db: Database, verifier: Verifier):
        self.db = db
        self.verifier = verifier

    # -- intake ----------------------------------------------------------------------------

    def submit(self, doc: Any, *, user: str | None, source: str = "api") -> Outcome:
        try:
            self.verifier.check(doc)
        except SubmissionError as err:
            self._audit_reject(user, err)
            raise
        sid = content_hash(doc)
        existing = self._existing(sid)
        if existing is not None:
            self._audit(user, "submission.resubmit", sid, {})
            return existing
        try:
            verdict = self.verifier.verify(doc)
        except SubmissionError as err:
            self._audit_reject(user, err)
            raise
        return self._store(verdict, user=user, source=source)

    def _existing(self, sid: str) -> Outcome | None:
        with self.db.tx() as tx:
            row = tx.one("SELECT id, verified FROM submissions WHERE id = ?", (sid,))
            if row is None:
                return None
            envs = tx.all("SELECT env_id, comparison FROM submission_envs WHERE submission_id = ?", (sid,))
        return Outcome(id=sid, created=False, verified=bool(row["verified"]), mismatches=_mismatches(envs))

    def _store(self, verdict: Verdict, *, user: str | None, source: str) -> Outcome:
        meta = verdict.doc["meta"]
        with self.db.tx(write=True) as tx:
            # Two identical submissions can race past _existing(); the primary key makes the
            # second insert a no-op rather than a duplicate row or an overwrite.
            inserted = tx.execute(
                "INSERT INTO submissions (id, user_name, source, name, description, model, url, seeds, created,"
                " verified, scorer, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (verdict.id, user, source, meta["name"], meta.get("description", ""), meta.get("model", ""),
                 meta.get("url", ""), json.dumps(meta.get("seeds", [])), utcnow(), int(verdict.verified),
                 json.dumps(verdict.scorer_info, sort_keys=True), canonical_json(verdict.doc)),
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
                tx.audit(user, "submission.create", verdict.id,
                         {"name": meta["name"], "source": source, "verified": verdict.verified,
                          "mismatches": {e: sorted(m) for e, m in verdict.mismatches.items() if m}})
            else:
                tx.audit(user, "submission.resubmit", verdict.id, {"raced": True})
        return Outcome(id=verdict.id, created=inserted == 1, verified=verdict.verified,
                       mismatches=verdict.mismatches)

    def _audit(self, user: str | None, action: str, obj: str | None, details: dict) -> None:
        with self.db.tx(write=True) as tx:
            tx.audit(user, action, obj, details)

    def _audit_reject(self, user: str | None, err: SubmissionError) -> None:
        self._audit(user, "submission.reject", None, {"field": err.field, "message": err.message[:500]})

    # -- queries ---------------------------------------------------------------------------

    def submission(self, sid: str) -> dict | None:
        with self.db.tx() as tx:
            row = tx.one("SELECT * FROM submissions WHERE id = ?", (sid,))
            if row is None:
                return None
            envs = tx.all("SELECT * FROM submission_envs WHERE submission_id = ? ORDER BY env_id", (sid,))
        out = {k: row[k] for k in ("id", "user_name", "source", "name", "description", "model", "url", "created")}
        out["seeds"] = json.loads(row["seeds"])
        out["verified"] = bool(row["verified"])
        out["scorer"] = json.loads(row["scorer"])
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
        """One row per (submission, env) with the recomputed metrics."""
        with self.db.tx() as tx:
            rows = tx.all(
                "SELECT s.id, s.name, s.model, s.created, e.env_id, e.task, e.recomputed_metrics, e.verified"
                " FROM submissions s JOIN submission_envs e ON e.submission_id = s.id ORDER BY s.created")
        return [table_row(r["id"], r["name"], r["model"], r["created"], r["env_id"], r["task"],
                          json.loads(r["recomputed_metrics"]), bool(r["verified"])) for r in rows]

    def board(self) -> dict:
        return build_board(self.rows())


def _mismatches(envs: list[dict]) -> dict:
    out = {}
    for e in envs:
        comp = json.loads(e["comparison"])
        out[e["env_id"]] = {k: v for k, v in comp.items() if v["status"] != "match"}
    return out


def table_row(sid: str, name: str, model: str, created: str, env_id: str, task: str,
              metrics: dict, verified: bool) -> dict:
    wr = metrics.get("win_rate_vs_reference") or {}
    length = metrics.get("length") or {}
    return {
        "id": sid, "name": name, "model": model, "date": created[:10], "env_id": env_id, "task": task,
        "bleu": metrics.get("bleu"), "chrf": metrics.get("chrf"), "rougeL": metrics.get("rougeL"),
        "reward": metrics.get("reward_mean"),
        "win_rate": wr.get("mean"), "win_rate_ci": [wr.get("ci_low"), wr.get("ci_high")], "n": wr.get("n"),
        "mean_words": length.get("mean_words"), "verified": verified,
    }


def _key(value: Any) -> float:
    return float("-inf") if value is None else float(value)


def build_board(rows: list[dict]) -> dict:
    """Per-env tables sorted by the task's primary metric, plus an overall table ranked by
    mean judge win rate over the envs a submission covers."""
    per_env: dict[str, list[dict]] = {}
    for r in rows:
        per_env.setdefault(r["env_id"], []).append(r)
    for env_id, items in per_env.items():
        metric = PRIMARY.get(items[0]["task"], "win_rate")
        items.sort(key=lambda r: _key(r.get(metric)), reverse=True)
    overall: dict[str, dict] = {}
    for r in rows:
        o = overall.setdefault(r["id"], {"id": r["id"], "name": r["name"], "model": r["model"], "date": r["date"],
                                         "envs": [], "verified": True, "_wr": [], "_len": [], "_rw": []})
        o["envs"].append(r["env_id"])
        o["verified"] = o["verified"] and r["verified"]
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
        for k in ("_wr", "_len", "_rw"):
            del o[k]
        table.append(o)
    table.sort(key=lambda o: (len(o["envs"]), _key(o["win_rate"])), reverse=True)
    return {"overall": table, "envs": dict(sorted(per_env.items())),
            "primary": {env: PRIMARY.get(items[0]["task"], "win_rate") for env, items in per_env.items()}}
