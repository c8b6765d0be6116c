"""The scoring queue: accepted submissions wait in ``scoring_jobs`` until a worker scores them.

``POST /api/submissions`` only validates the structure and inserts a ``pending`` job (the
document included), so it answers in well under a second whatever the submission's size; scoring
happens in a :class:`ScoringWorker` (a thread started with the app, or ``rlhf-gym leaderboard
worker`` processes on the same database).

Claim and lease. A worker *claims* the oldest pending job whose lease is free or expired with one
conditional UPDATE (``attempts`` is the fencing token: the UPDATE matches only the attempt it
read, so of two racing workers exactly one wins, on SQLite and PostgreSQL alike). While it scores,
a heartbeat renews the lease every third of ``lease_s``. It completes the job in the transaction
that inserts the scored submission, and only if it still holds the lease (same owner, same
attempt); otherwise that transaction rolls back (:class:`LeaseLost`) and the worker that took
the job over writes the row. So nothing accepted is lost, and nothing is stored twice.

Crashes. A process killed mid-scoring (``kill -9`` included) leaves a lease that expires
``lease_s`` after its last heartbeat; the next claim after that scores the job again. A job
claimed ``max_attempts`` times without finishing (it keeps killing its worker) is marked
``failed`` instead of being retried forever.

Statuses seen through the API: ``pending`` (queued or being scored), then ``verified`` or
``mismatch`` (stored in ``submissions``; the job row is ``done``), or ``failed`` with
``error_kind`` ``rejected`` (the scorer refused the submission, e.g. ids it could not match),
``unavailable`` (this server cannot score that env now), ``crashed`` (an unexpected error) or
``abandoned`` (too many attempts). Resubmitting an identical document requeues a failed job
unless it was ``rejected``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from .db import Database, Tx, utcnow

log = logging.getLogger("rlhf_gym.leaderboard.jobs")

MAX_ATTEMPTS = 3
DEFAULT_LEASE_S = 30.0
DEFAULT_POLL_S = 1.0
RETRYABLE = ("unavailable", "crashed", "abandoned")


class LeaseLost(RuntimeError):
    """This worker no longer holds the job's lease: another worker took it over."""


@dataclass
class Job:
    submission_id: str
    attempts: int  # the fencing token: the attempt this worker's lease belongs to
    owner: str
    document: str
    user_name: str | None
    source: str
    created: str  # when the submission was accepted


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def enqueue(tx: Tx, sid: str, *, document: str, meta: str, user: str | None, source: str) -> bool:
    """Queue a submission; False when a job for this id exists already (two identical posts
    racing: on PostgreSQL the second waits for the first to commit, then inserts nothing)."""
    now = utcnow()
    n = tx.execute(
        "INSERT INTO scoring_jobs (submission_id, user_name, source, meta, document, status, attempts, created,"
        " updated) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?) ON CONFLICT (submission_id) DO NOTHING",
        (sid, user, source, meta, document, now, now))
    return n == 1


def requeue(tx: Tx, sid: str) -> bool:
    n = tx.execute(
        "UPDATE scoring_jobs SET status = 'pending', attempts = 0, lease_owner = NULL, lease_expires = NULL,"
        " error_kind = NULL, error_field = NULL, error = NULL, updated = ?"
        " WHERE submission_id = ? AND status = 'failed'",
        (utcnow(), sid))
    return n == 1


def get(tx: Tx, sid: str) -> dict | None:
    return tx.one("SELECT submission_id, user_name, source, meta, status, attempts, lease_owner, lease_expires,"
                  " error_kind, error_field, error, created, updated FROM scoring_jobs WHERE submission_id = ?", (sid,))


def claim(db: Database, owner: str, *, lease_s: float = DEFAULT_LEASE_S, submission_id: str | None = None,
          max_attempts: int = MAX_ATTEMPTS) -> Job | None:
    """Take the lease of the oldest claimable pending job (or of ``submission_id``); None if there
    is none. Jobs already tried ``max_attempts`` times are marked failed on the way."""
    now = time.time()
    with db.tx(write=True) as tx:
        free = "status = 'pending' AND (lease_expires IS NULL OR lease_expires < ?)"
        one = " AND submission_id = ?" if submission_id is not None else ""
        candidates = tx.all(f"SELECT submission_id, attempts FROM scoring_jobs WHERE {free}{one}"
                            " ORDER BY created, submission_id LIMIT 8", [now] + ([submission_id] if one else []))
        for cand in candidates:
            sid, attempts = cand["submission_id"], int(cand["attempts"])
            if attempts >= max_attempts:
                n = tx.execute(
                    "UPDATE scoring_jobs SET status = 'failed', error_kind = 'abandoned', error = ?,"
                    " lease_owner = NULL, lease_expires = NULL, updated = ?"
                    " WHERE submission_id = ? AND attempts = ? AND status = 'pending'",
                    (f"scoring did not finish after {attempts} attempts (the worker died or stalled each time)",
                     utcnow(), sid, attempts))
                if n == 1:
                    tx.audit(None, "submission.fail", sid, {"kind": "abandoned", "attempts": attempts})
                continue
            n = tx.execute(
                "UPDATE scoring_jobs SET attempts = attempts + 1, lease_owner = ?, lease_expires = ?, updated = ?"
                f" WHERE submission_id = ? AND attempts = ? AND {free}",
                (owner, now + lease_s, utcnow(), sid, attempts, now))
            if n != 1:
                continue  # another worker won this one
            row = tx.one("SELECT document, user_name, source, created FROM scoring_jobs WHERE submission_id = ?",
                         (sid,))
            tx.audit(None, "submission.claim", sid, {"worker": owner, "attempt": attempts + 1})
            return Job(submission_id=sid, attempts=attempts + 1, owner=owner, document=row["document"],
                       user_name=row["user_name"], source=row["source"], created=row["created"])
    return None


def _fence() -> str:
    return "submission_id = ? AND lease_owner = ? AND attempts = ? AND status = 'pending'"


def renew(db: Database, job: Job, lease_s: float) -> bool:
    """Extend the lease; False when it was lost."""
    with db.tx(write=True) as tx:
        n = tx.execute(f"UPDATE scoring_jobs SET lease_expires = ? WHERE {_fence()}",
                       (time.time() + lease_s, job.submission_id, job.owner, job.attempts))
    return n == 1


def finish(tx: Tx, job: Job, status: str, *, error_kind: str | None = None, error_field: str | None = None,
           error: str | None = None) -> None:
    """Close the job inside the caller's transaction, or raise :class:`LeaseLost` (the caller's
    transaction then rolls back, so nothing it wrote is kept). The stored document is dropped
    once done: the ``submissions`` row has its own copy."""
    doc = "" if status == "done" else None
    n = tx.execute(
        "UPDATE scoring_jobs SET status = ?, lease_owner = NULL, lease_expires = NULL, error_kind = ?, error_field = ?,"
        f" error = ?, document = COALESCE(?, document), updated = ? WHERE {_fence()}",
        (status, error_kind, error_field, error, doc, utcnow(), job.submission_id, job.owner, job.attempts))
    if n != 1:
        raise LeaseLost(f"job {job.submission_id} attempt {job.attempts}: lease lost to another worker")


def release(db: Database, job: Job) -> bool:
    """Give the lease back without finishing (a worker shutting down), so the job is claimable now
    rather than after the lease expires; the attempt does not count."""
    with db.tx(write=True) as tx:
        n = tx.execute(f"UPDATE scoring_jobs SET lease_owner = NULL, lease_expires = NULL, attempts = attempts - 1,"
                       f" updated = ? WHERE {_fence()}", (utcnow(), job.submission_id, job.owner, job.attempts))
    return n == 1


def counts(db: Database) -> dict[str, int]:
    """Jobs by status, with ``pending`` split into queued and ``scoring`` (a live lease)."""
    now = time.time()
    with db.tx() as tx:
        rows = tx.all("SELECT status, CASE WHEN lease_expires IS NOT NULL AND lease_expires >= ? THEN 1 ELSE 0 END"
                      " AS leased, COUNT(*) AS n FROM scoring_jobs GROUP BY status, leased", (now,))
    out = {"pending": 0, "scoring": 0, "failed": 0}
    for r in rows:
        if r["status"] == "pending":
            out["scoring" if r["leased"] else "pending"] += int(r["n"])
        elif r["status"] == "failed":
            out["failed"] += int(r["n"])
    return out


class _Heartbeat(threading.Thread):
    def __init__(self, db: Database, job: Job, lease_s: float):
        super().__init__(name=f"lease-{job.submission_id[:8]}", daemon=True)
        self.db, self.job, self.lease_s = db, job, lease_s
        self.done = threading.Event()
        self.lost = False

    def run(self):
        while not self.done.wait(self.lease_s / 3):
            try:
                if not renew(self.db, self.job, self.lease_s):
                    self.lost = True
                    log.warning("lost the lease of job %s; another worker will finish it", self.job.submission_id)
                    return
            except Exception:  # a transient DB error: the next beat tries again
                log.exception("lease renewal of job %s failed", self.job.submission_id)


class ScoringWorker:
    """Claims pending jobs and scores them with ``board.run_job`` until stopped.

    ``wake`` (a threading.Event the app sets on every accepted submission) cuts the idle wait
    short; without it the worker polls every ``poll_s`` seconds, which is what picks up jobs
    accepted by another process."""

    def __init__(self, board, *, lease_s: float = DEFAULT_LEASE_S, poll_s: float = DEFAULT_POLL_S,
                 max_attempts: int = MAX_ATTEMPTS, wake: threading.Event | None = None, name: str = "scoring-worker"):
        if lease_s <= 0 or poll_s <= 0:
            raise ValueError("lease_s and poll_s must be positive")
        self.board, self.lease_s, self.poll_s, self.max_attempts = board, float(lease_s), float(poll_s), max_attempts
        self.wake = wake or threading.Event()
        self.owner = new_owner()
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: Job | None = None
        self.processed = 0

    def run_once(self, submission_id: str | None = None) -> bool:
        """Claim and score one job; False when there was none to claim."""
        job = claim(self.board.db, self.owner, lease_s=self.lease_s, submission_id=submission_id,
                    max_attempts=self.max_attempts)
        if job is None:
            return False
        self.current = job
        beat = _Heartbeat(self.board.db, job, self.lease_s)
        beat.start()
        try:
            self.board.run_job(job)
        except LeaseLost as err:
            log.warning("%s", err)
        finally:
            beat.done.set()
            self.current = None
        self.processed += 1
        return True

    def run_until_idle(self) -> int:
        """Score jobs until none is claimable; returns how many were processed."""
        n = 0
        while not self._stop.is_set() and self.run_once():
            n += 1
        return n

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_once():
                    continue
            except Exception:  # the DB is unreachable for a moment: keep the worker alive
                log.exception("%s: claiming a job failed", self.name)
            self.wake.wait(self.poll_s)
            self.wake.clear()

    def start(self) -> "ScoringWorker":
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current job; if it is still scoring after ``timeout`` seconds, hand its
        lease back so a restarted server takes it at once (the abandoned scoring is fenced)."""
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            job = self.current
            if self._thread.is_alive() and job is not None:
                release(self.board.db, job)
