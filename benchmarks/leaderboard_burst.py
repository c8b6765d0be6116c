#!/usr/bin/env python
"""A burst of concurrent full-suite submissions against a real leaderboard server, and a
kill -9 in the middle of scoring.

For each backend (SQLite, and PostgreSQL where a server can be started here; see
``rlhf_gym.leaderboard.pgserver``):

1. starts ``rlhf-gym leaderboard serve --limit N --rate-limit 0 --lease-s L`` as a subprocess
   (one scoring worker thread, the default), and scores one warm-up submission so the reward
   models and the gold judge are loaded (its time is reported separately);
2. posts ``--systems`` distinct submissions (every built-in env of the default suite: all three
   tasks, first N test examples each) plus one copy with a tampered BLEU, all at once, while a
   poller reads ``GET /api/leaderboard`` back to back until the queue is empty;
3. checks every submission's status, and the database: each stored exactly once;
4. posts three more systems, kills the server with SIGKILL as soon as one of them is being scored,
   restarts it on the same database and waits for all three.

Submissions are made the way ``rlhf-gym bench --limit N`` makes them (the built-in ``lead`` and
``reference`` agents, scored by ``evaluation.score_predictions``), with the predictions of each
system truncated to its own word budget, so the systems share some generations (as real
submissions from related systems do) and differ in others.

Prints a summary and writes it as JSON (``--out``). Run::

    python benchmarks/leaderboard_burst.py --limit 8 --systems 20 --out benchmarks/leaderboard_burst.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

BASES = ("lead", "reference")
WORD_BUDGETS = (None, 16, 12, 10, 8, 6, 5, 4, 3, 2, 7, 9, 11)  # None: the agent's output unchanged


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def make_systems(n: int, limit: int, offset: int = 0) -> list[dict]:
    """``n`` distinct submissions (system ``offset`` .. ``offset + n - 1``)."""
    from rlhf_gym import evaluation
    from rlhf_gym.agents import make_agent
    from rlhf_gym.leaderboard.validate import build_submission
    from rlhf_gym.score_cache import MemoryScoreCache
    from rlhf_gym.tasks import get_task

    cache = MemoryScoreCache()  # the client's own: texts shared between systems are scored once here too
    outputs: dict[tuple[str, str], list[dict]] = {}
    docs = []
    for k in range(offset, offset + n):
        base, budget = BASES[k % len(BASES)], WORD_BUDGETS[(k // len(BASES)) % len(WORD_BUDGETS)]
        name = f"{base}" + (f" cut to {budget} words" if budget else "")
        results = evaluation.new_results({"spec": base, "name": name})
        results["settings"] = {"split": "test", "limit": limit}
        for env_id in evaluation.list_env_ids():
            task = get_task(env_id)
            if (base, env_id) not in outputs:
                agent = make_agent(base, task)
                outputs[(base, env_id)] = evaluation.generate(agent, task.examples("test")[:limit], show_progress=False)
            preds = []
            for p in outputs[(base, env_id)]:
                text = p["prediction"] if budget is None else " ".join(p["prediction"].split()[:budget])
                preds.append({"id": p["id"], "prediction": text[:task.max_response_chars]})
            results["envs"][env_id] = evaluation.score_predictions(env_id, preds, limit=limit, cache=cache)
        docs.append(build_submission(results, name=f"{name} #{k}", model=base))
    return docs


def post(url: str, token: str, doc: dict, client=None) -> tuple[int, dict, float]:
    """POST one submission; the time covers the request only (the body is encoded before, and a
    shared ``client`` keeps connection set-up out of it)."""
    import httpx

    body = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    own = client is None
    client = client or httpx.Client(timeout=120)
    try:
        t0 = time.perf_counter()
        r = client.post(url + "/api/submissions", content=body, headers=headers)
        return r.status_code, r.json(), time.perf_counter() - t0
    finally:
        if own:
            client.close()


class Poller(threading.Thread):
    """GET /api/leaderboard back to back; records each latency and the last queue counts."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.latencies, self.stop_event, self.queue, self.errors = url, [], threading.Event(), None, 0

    def run(self):
        import httpx

        with httpx.Client(timeout=60) as client:
            while not self.stop_event.is_set():
                t0 = time.perf_counter()
                try:
                    r = client.get(self.url + "/api/leaderboard")
                    self.latencies.append(time.perf_counter() - t0)
                    self.queue = r.json()["queue"]
                except Exception:  # counted, and the run is then reported as failing
                    self.errors += 1
                time.sleep(0.02)


def wait_drained(url: str, timeout: float) -> float:
    import httpx

    t0 = time.perf_counter()
    while True:
        q = httpx.get(url + "/api/leaderboard", timeout=60).json()["queue"]
        if q["pending"] == 0 and q["scoring"] == 0:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"queue not drained after {timeout} s: {q}")
        time.sleep(0.2)


def status(url: str, sid: str) -> dict:
    import httpx

    return httpx.get(f"{url}/api/submissions/{sid}?generations=false", timeout=60).json()


def job_seconds(db) -> list[float]:
    """Claim-to-stored time of every job, from the audit log."""
    with db.tx() as tx:
        rows = tx.all("SELECT ts, action, object FROM audit_log WHERE action IN ('submission.claim',"
                      " 'submission.create') ORDER BY id")
    claimed, out = {}, []
    for r in rows:
        ts = datetime.strptime(r["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
        if r["action"] == "submission.claim":
            claimed[r["object"]] = ts
        elif r["object"] in claimed:
            out.append(ts - claimed.pop(r["object"]))
    return out


def count(db, sql: str) -> int:
    with db.tx() as tx:
        return int(tx.one(sql)["n"])


def run_backend(name: str, db_url: str, args, warmup: dict, docs: list[dict], extra: list[dict], tmp: Path) -> dict:
    from rlhf_gym.leaderboard.db import Database
    from rlhf_gym.leaderboard.process import serve_subprocess
    from rlhf_gym.leaderboard.validate import content_hash

    db = Database(db_url)
    token = db.add_user("bench")
    serve_args = ["--limit", str(args.limit), "--rate-limit", "0", "--lease-s", str(args.lease_s), "--poll-s", "0.5"]
    out: dict = {"backend": name}
    print(f"[{name}] starting the server", flush=True)
    with serve_subprocess(db_url, tmp / f"{name}-server.log", serve_args, timeout=300) as (url, _port, server):
        t0 = time.perf_counter()
        code, body, _ = post(url, token, warmup)
        assert code == 202, body
        wait_drained(url, 1800)
        out["warmup_s"] = round(time.perf_counter() - t0, 2)
        out["warmup_status"] = status(url, body["id"])["status"]
        print(f"[{name}] warm-up scored in {out['warmup_s']} s ({out['warmup_status']})", flush=True)

        tampered = copy.deepcopy(docs[0])
        tampered["meta"]["name"] += " (tampered BLEU)"
        env = next(iter(tampered["results"]["envs"]))
        tampered["results"]["envs"][env]["metrics"]["bleu"] += 5.0
        burst = docs + [tampered]
        poller = Poller(url)
        poller.start()
        time.sleep(0.5)  # a few idle-server readings first
        idle = len(poller.latencies)
        import httpx

        start = threading.Barrier(len(burst))

        def send(doc):
            start.wait()  # every request released at the same moment
            return post(url, token, doc, client)

        with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=len(burst) + 4)) as client, \
                ThreadPoolExecutor(max_workers=len(burst)) as pool:
            t0 = time.perf_counter()
            answers = list(pool.map(send, burst))
        posted = time.perf_counter() - t0
        drained = wait_drained(url, 3600)
        makespan = time.perf_counter() - t0
        poller.stop_event.set()
        poller.join()
        during = poller.latencies[idle:]
        post_s = [a[2] for a in answers]
        final = [status(url, content_hash(d)) for d in burst]
        statuses = [f["status"] for f in final]
        # What differed, for any submission that should have verified and did not.
        out["unexpected_mismatches"] = {
            f["name"]: {env: {k: row for k, row in e["comparison"].items() if row["status"] != "match"}
                        for env, e in f["envs"].items() if not e["verified"]}
            for f in final[:-1] if f["status"] != "verified"}
        out["burst"] = {
            "submissions": len(burst), "envs_per_submission": len(docs[0]["results"]["envs"]),
            "post_http_codes": sorted({a[0] for a in answers}),
            "post_s": {"max": round(max(post_s), 3), "p50": round(percentile(post_s, 0.5), 3),
                       "p95": round(percentile(post_s, 0.95), 3)},
            "every_post_within_5s": max(post_s) < 5.0,
            "all_posted_s": round(posted, 2), "queue_drained_s": round(drained + posted, 2),
            "makespan_s": round(makespan, 2),
            "leaderboard_get": {"n": len(during), "p50_s": round(percentile(during, 0.5), 3),
                                "p95_s": round(percentile(during, 0.95), 3), "max_s": round(max(during), 3),
                                "errors": poller.errors},
            "leaderboard_get_p95_under_1s": percentile(during, 0.95) < 1.0,
            "verified": statuses[:-1].count("verified"), "expected_verified": len(docs),
            "tampered_status": statuses[-1],
        }
        out["jobs_s"] = {"n": len(js := job_seconds(db)), "mean": round(statistics.mean(js), 2),
                         "max": round(max(js), 2)}
        rows = count(db, "SELECT COUNT(*) AS n FROM submissions")
        out["stored"] = {"submissions": rows, "distinct": count(db, "SELECT COUNT(DISTINCT id) AS n FROM submissions"),
                         "expected": len(burst) + 1, "audit_creates": count(
                             db, "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'submission.create'"),
                         "score_cache_entries": count(db, "SELECT COUNT(*) AS n FROM score_cache")}
        print(f"[{name}] burst: {json.dumps(out['burst'])}", flush=True)

        # kill -9 while a job is being scored
        for d in extra:
            code, body, _ = post(url, token, d)
            assert code == 202, body
        t_wait = time.perf_counter()
        while True:
            with db.tx() as tx:
                leased = tx.all("SELECT submission_id, attempts FROM scoring_jobs WHERE status = 'pending'"
                                " AND lease_owner IS NOT NULL")
            if leased or time.perf_counter() - t_wait > 600:
                break
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=60)
        with db.tx() as tx:
            left = tx.all("SELECT submission_id, status, attempts, lease_owner FROM scoring_jobs"
                          " WHERE status = 'pending'")
        killed_ids = [r["submission_id"] for r in leased]
    out["restart"] = {"killed_with": "SIGKILL", "server_exit_code": server.returncode,
                      "pending_after_kill": len(left), "being_scored_when_killed": len(killed_ids)}
    print(f"[{name}] killed with {len(left)} jobs pending, {len(killed_ids)} mid-scoring; restarting", flush=True)
    with serve_subprocess(db_url, tmp / f"{name}-server-2.log", serve_args, timeout=300) as (url, _port, _server):
        t0 = time.perf_counter()
        wait_drained(url, 1800)
        out["restart"]["all_scored_after_restart_s"] = round(time.perf_counter() - t0, 2)
        out["restart"]["statuses"] = [status(url, content_hash(d))["status"] for d in extra]
    with db.tx() as tx:
        out["restart"]["attempts_of_killed_job"] = [
            int(tx.one("SELECT attempts FROM scoring_jobs WHERE submission_id = ?", (sid,))["attempts"])
            for sid in killed_ids]
    out["restart"]["rows_each"] = [count(db, f"SELECT COUNT(*) AS n FROM submissions WHERE id = '{content_hash(d)}'")
                                   for d in extra]
    out["stored_final"] = {"submissions": count(db, "SELECT COUNT(*) AS n FROM submissions"),
                           "distinct": count(db, "SELECT COUNT(DISTINCT id) AS n FROM submissions"),
                           "expected": len(docs) + 2 + len(extra)}
    print(f"[{name}] restart: {json.dumps(out['restart'])}", flush=True)
    out["ok"] = bool(out["burst"]["every_post_within_5s"] and out["burst"]["leaderboard_get_p95_under_1s"]
                     and out["burst"]["verified"] == len(docs) and out["burst"]["tampered_status"] == "mismatch"
                     and out["stored"]["submissions"] == out["stored"]["distinct"] == out["stored"]["expected"]
                     and all(s == "verified" for s in out["restart"]["statuses"])
                     and out["restart"]["rows_each"] == [1] * len(extra)
                     and out["stored_final"]["submissions"] == out["stored_final"]["expected"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=8, help="test examples per env the server scores (default 8)")
    ap.add_argument("--systems", type=int, default=20, help="distinct submissions in the burst (default 20)")
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--lease-s", type=float, default=10.0, help="the server's --lease-s (default 10)")
    ap.add_argument("--out", default="benchmarks/leaderboard_burst.json")
    args = ap.parse_args(argv)
    started = time.time()
    load_before = os.getloadavg()
    from rlhf_gym import evaluation

    print(f"making {args.systems + 4} submissions (bench --limit {args.limit} style) ...", flush=True)
    t0 = time.perf_counter()
    all_docs = make_systems(args.systems + 4, args.limit)
    prep_s = time.perf_counter() - t0
    warmup, docs, extra = all_docs[-1], all_docs[:args.systems], all_docs[args.systems:args.systems + 3]
    shown_args = " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": f"python benchmarks/leaderboard_burst.py {shown_args}",
              "date": datetime.now().strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
              "load_average_at_start": [round(x, 2) for x in load_before],
              "envs": evaluation.list_env_ids(), "limit": args.limit, "systems": args.systems,
              "lease_s": args.lease_s, "client_prep_s": round(prep_s, 1), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="lb-burst-") as tmp:
        tmp = Path(tmp)
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if backend == "sqlite":
                report["backends"]["sqlite"] = run_backend("sqlite", str(tmp / "burst.db"), args, warmup, docs, extra,
                                                           tmp)
            elif backend == "postgres":
                from rlhf_gym.leaderboard.pgserver import PostgresServer, unavailable_reason

                reason = unavailable_reason()
                if reason:
                    report["backends"]["postgres"] = {"skipped": reason}
                    print(f"[postgres] skipped: {reason}", flush=True)
                    continue
                with PostgresServer() as pg:
                    report["backends"]["postgres"] = run_backend("postgres", pg.create_database("burst"), args,
                                                                 warmup, docs, extra, tmp)
            else:
                raise SystemExit(f"unknown backend {backend!r}; use sqlite and/or postgres")
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_s"] = round(time.time() - started, 1)
    from rlhf_gym.evaluation import write_json_atomic

    write_json_atomic(args.out, report)
    print(json.dumps(report, indent=1))
    ok = all(b.get("ok", True) for b in report["backends"].values())
    print(f"{'PASS' if ok else 'FAIL'}: wrote {args.out} in {report['wall_s']} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
