#!/usr/bin/env python
"""Scripted end-to-end session against a real leaderboard server on 127.0.0.1.

Starts ``rlhf-gym leaderboard serve`` as a subprocess on a free port with a temporary SQLite
DB, creates a user with ``rlhf-gym leaderboard add-user`` and then, with a real
``rlhf-gym bench --agent lead --envs rlhf_gym/Dialogue-v0`` result (generated here unless
``--results`` is given), checks over HTTP:

  a) a valid submission is accepted (202, queued) and verified by the server's own recomputation
     (its scoring worker), followed through GET /api/submissions/{id}
  b) posting the same document again is idempotent (200, same id, one row)
  c) a copy with BLEU tampered is stored but flagged, with the recomputed BLEU shown
  d) 401 without / with a bad token, 413 over --max-body-mb (with and without
     Content-Length), 422 for malformed JSON, a schema violation (naming the field) and
     missing example ids
  e) N concurrent distinct Dialogue submissions (one prediction perturbed in each, so every
     one is really rescored by the default reward model and judge) plus some concurrent
     duplicates: every distinct document stored exactly once

Prints one PASS/FAIL line per check with its numbers; exits 1 if any check fails.

    python scripts/leaderboard_session.py [--results dialogue_lead.json] [--concurrent 100]
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ENV = "rlhf_gym/Dialogue-v0"
FAILED: list[str] = []


def check(name: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)
    return ok


def post(url: str, body: bytes, token: str | None, timeout: float = 900) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + "/api/submissions", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except json.JSONDecodeError:
            return err.code, {"raw": raw.decode("utf-8", "replace")[:200]}


def wait_scored(url: str, sid: str, timeout: float = 1800) -> dict:
    """Follow a queued submission until its status is no longer pending; the GET answer, with
    ``mismatches`` (per env, the comparison rows that do not match) added."""
    deadline = time.monotonic() + timeout
    while True:
        sub = json.loads(urllib.request.urlopen(f"{url}/api/submissions/{sid}?generations=false").read())
        if sub["status"] != "pending" or time.monotonic() > deadline:
            sub["mismatches"] = {env: {k: row for k, row in e["comparison"].items() if row["status"] != "match"}
                                 for env, e in sub.get("envs", {}).items()}
            return sub
        time.sleep(0.2)


def wait_drained(url: str, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = json.loads(urllib.request.urlopen(f"{url}/api/leaderboard").read())["queue"]
        if queue["pending"] == 0 and queue["scoring"] == 0:
            return
        time.sleep(0.5)


def post_raw(port: int, n_bytes: int, token: str, chunked: bool) -> int:
    """Send an oversized body and return the status. The server may answer 413 and close as soon
    as the Content-Length header (or the running byte count, when chunked) passes the limit, before
    the body is fully sent; urllib then fails on the broken pipe without ever reading the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", "/api/submissions")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Type", "application/json")
    if chunked:  # no Content-Length to check up front: the server must count the bytes
        conn.putheader("Transfer-Encoding", "chunked")
    else:
        conn.putheader("Content-Length", str(n_bytes))
    conn.endheaders()
    chunk = b" " * 65536
    try:
        for _ in range(n_bytes // len(chunk)):
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
        conn.send(b"0\r\n\r\n" if chunked else b" " * (n_bytes % len(chunk)))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the whole body was sent
    status = conn.getresponse().status
    conn.close()
    return status


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", help="an existing `rlhf-gym bench` results JSON for rlhf_gym/Dialogue-v0")
    ap.add_argument("--concurrent", type=int, default=100, help="distinct concurrent submissions for check e")
    ap.add_argument("--duplicates", type=int, default=10, help="extra concurrent re-posts of some of them")
    ap.add_argument("--max-body-mb", type=float, default=2.0)
    ap.add_argument("--keep", help="keep the server DB and logs in this directory")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.keep or tempfile.mkdtemp(prefix="lb_session_"))
    work.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "rlhf_gym.cli"]
    results_path = Path(args.results) if args.results else work / "dialogue_lead.json"
    if not args.results:
        t0 = time.monotonic()
        run([*exe, "bench", "--agent", "lead", "--envs", ENV, "--out", str(results_path)])
        print(f"generated {results_path} with rlhf-gym bench in {time.monotonic() - t0:.0f}s", flush=True)
    results = json.loads(results_path.read_text(encoding="utf-8"))
    block = results["envs"][ENV]
    n_examples = len(block["generations"])

    from rlhf_gym.leaderboard.validate import build_submission, content_hash

    db_path = work / "session.db"
    token = run([*exe, "leaderboard", "add-user", "session-bot", "--db", str(db_path)]).stdout.strip()
    from rlhf_gym.leaderboard.process import serve_subprocess

    # --rate-limit 0: check e posts 100+ submissions as one user within seconds, which the
    # default 60/min would (correctly) refuse with 429.
    with serve_subprocess(db_path, work / "server.log",
                          ["--max-body-mb", str(args.max_body_mb), "--rate-limit", "0"]) as (url, port, server):
        print(f"server pid {server.pid} on {url}, DB {db_path}", flush=True)
        session(url, port, token, results, block, n_examples, db_path, args, content_hash, build_submission)
    print(f"{'FAILED: ' + ', '.join(FAILED) if FAILED else 'ALL CHECKS PASSED'}", flush=True)
    return 1 if FAILED else 0


def count_rows(db_path: Path, sql: str, params=()) -> int:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql, params).fetchone()[0]


def session(url, port, token, results, block, n_examples, db_path, args, content_hash, build_submission):
    doc = build_submission(results, name="lead (real bench)", model="lead",
                           description="first sentence of the dialogue context")
    body = json.dumps(doc, ensure_ascii=False).encode("utf-8")

    # a) accepted and verified -- the first recompute loads MiniLM and scores every text.
    t0 = time.monotonic()
    status, out = post(url, body, token)
    if status == 202:
        out = {**out, **wait_scored(url, out["id"])}
    dt = time.monotonic() - t0
    check("a valid submission", status == 202 and out.get("created") is True and out.get("verified") is True
          and out.get("id") == content_hash(doc),
          f"HTTP {status}, created={out.get('created')}, verified={out.get('verified')}, {n_examples} examples"
          f" recomputed in {dt:.1f}s, id {str(out.get('id'))[:12]}, mismatches={out.get('mismatches')}")
    sub = json.loads(urllib.request.urlopen(f"{url}/api/submissions/{content_hash(doc)}").read())
    m = sub["envs"][ENV]["metrics"]
    print(f"     recomputed: BLEU {m['bleu']:.3f}, chrF {m['chrf']:.3f}, ROUGE-L {m['rougeL']:.4f},"
          f" reward {m['reward_mean']:.4f}, win rate {m['win_rate_vs_reference']['mean']:.3f}", flush=True)

    # b) idempotent
    t0 = time.monotonic()
    status, out = post(url, body, token)
    rows = count_rows(db_path, "SELECT COUNT(*) FROM submissions WHERE id = ?", (content_hash(doc),))
    check("b idempotent resubmission", status == 200 and out.get("created") is False and rows == 1,
          f"HTTP {status}, created={out.get('created')}, same id={out.get('id') == content_hash(doc)},"
          f" rows with that id={rows}, {time.monotonic() - t0:.2f}s")

    # c) tampered BLEU: stored (the generations are real) but flagged, never trusted.
    bad = copy.deepcopy(doc)
    claimed = bad["results"]["envs"][ENV]["metrics"]["bleu"] + 10.0
    bad["results"]["envs"][ENV]["metrics"]["bleu"] = claimed
    bad["meta"]["name"] = "lead (BLEU tampered)"
    t0 = time.monotonic()
    status, out = post(url, json.dumps(bad).encode(), token)
    if status == 202:
        out = {**out, **wait_scored(url, out["id"])}
    mm = (out.get("mismatches") or {}).get(ENV, {})
    bleu = mm.get("bleu", {})
    stored = json.loads(urllib.request.urlopen(f"{url}/api/submissions/{out.get('id')}").read()) if status < 300 else {}
    shown = (stored.get("envs") or {}).get(ENV, {}).get("metrics", {}).get("bleu")
    check("c tampered BLEU flagged", status == 202 and out.get("verified") is False and list(mm) == ["bleu"]
          and bleu.get("status") == "mismatch" and shown == m["bleu"],
          f"HTTP {status}, verified={out.get('verified')}, mismatched keys={sorted(mm)}, submitted"
          f" {bleu.get('submitted')!r} vs recomputed {bleu.get('recomputed')!r}; leaderboard shows {shown!r}"
          f" ({time.monotonic() - t0:.1f}s)")

    # d) rejections
    status, out = post(url, body, None)
    check("d1 401 no token", status == 401, f"HTTP {status}: {out.get('detail')}")
    status, out = post(url, body, "rlg_not-a-real-token")
    check("d2 401 bad token", status == 401, f"HTTP {status}: {out.get('detail')}")
    big = int(args.max_body_mb * 2**20) + 1024
    status = post_raw(port, big, token, chunked=False)
    check("d3 413 body over --max-body-mb", status == 413, f"HTTP {status} for {big} bytes with Content-Length")
    status = post_raw(port, big + 65536, token, chunked=True)
    check("d4 413 chunked body over limit", status == 413, f"HTTP {status} for ~{big + 65536} bytes, no Content-Length")
    status, out = post(url, b'{"submission_version": 1, "meta": {', token)
    check("d5 422 malformed JSON", status == 422 and out.get("field") == "$", f"HTTP {status}: {out.get('detail')}")
    schema = copy.deepcopy(doc)
    schema["results"]["envs"][ENV]["generations"][3]["prediction"] = 42
    status, out = post(url, json.dumps(schema).encode(), token)
    want = f"results.envs[{ENV!r}].generations[3].prediction"
    check("d6 422 schema violation names field", status == 422 and out.get("field") == want,
          f"HTTP {status}, field={out.get('field')!r}: {out.get('detail')}")
    short = copy.deepcopy(doc)
    dropped = [g["id"] for g in short["results"]["envs"][ENV]["generations"][-7:]]
    del short["results"]["envs"][ENV]["generations"][-7:]
    status, out = post(url, json.dumps(short).encode(), token)
    detail = str(out.get("detail"))
    check("d7 422 missing example ids", status == 422 and "7 missing ids" in detail and dropped[0] in detail,
          f"HTTP {status}, field={out.get('field')!r}: {detail[:160]}")

    # e) concurrency: N distinct documents, each with one prediction changed so that every
    # recompute scores a new text with the real reward model and judge; their submitted
    # metrics are the unperturbed ones, so most are (correctly) stored as not verified.
    # A few documents are posted twice at the same moment to race the duplicate check.
    docs = []
    for i in range(args.concurrent):
        d = copy.deepcopy(doc)
        d["meta"]["name"] = f"concurrent-{i:03d}"
        g = d["results"]["envs"][ENV]["generations"][i % n_examples]
        g["prediction"] = g["prediction"] + f" (variant {i})"
        docs.append(d)
    bodies = [json.dumps(d, ensure_ascii=False).encode("utf-8") for d in docs]
    order = list(range(args.concurrent)) + list(range(min(args.duplicates, args.concurrent)))
    barrier = threading.Barrier(len(order))

    def send(k: int):
        barrier.wait()  # release every request at once
        return k, post(url, bodies[k], token)

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(order)) as pool:
        answers = list(pool.map(send, order))
    dt = time.monotonic() - t0
    t1 = time.monotonic()
    wait_drained(url)
    scored_s = time.monotonic() - t1
    statuses: dict[int, int] = {}
    created = sum(1 for _, (s, o) in answers if s == 202 and o.get("created"))
    for _, (s, _o) in answers:
        statuses[s] = statuses.get(s, 0) + 1
    ids_ok = all(o.get("id") == content_hash(docs[k]) for k, (s, o) in answers if s in (200, 202))
    rows = count_rows(db_path, "SELECT COUNT(*) FROM submissions WHERE name LIKE 'concurrent-%'")
    distinct = count_rows(db_path, "SELECT COUNT(DISTINCT id) FROM submissions WHERE name LIKE 'concurrent-%'")
    env_rows = count_rows(db_path, "SELECT COUNT(*) FROM submission_envs e JOIN submissions s ON s.id ="
                                   " e.submission_id WHERE s.name LIKE 'concurrent-%'")
    creates = count_rows(db_path, "SELECT COUNT(*) FROM audit_log WHERE action = 'submission.create'")
    verified = sum(1 for d in docs if wait_scored(url, content_hash(d), 60).get("verified"))
    check("e concurrent submissions stored exactly once",
          statuses.get(202, 0) == args.concurrent and created == args.concurrent and rows == distinct == env_rows
          == args.concurrent and ids_ok and creates == args.concurrent + 2,
          f"{len(order)} requests ({args.concurrent} distinct + {len(order) - args.concurrent} duplicates) in"
          f" {dt:.1f}s ({len(order) / dt:.1f} req/s), all scored {scored_s:.1f}s later; statuses {dict(sorted(statuses.items()))}; created"
          f" {created}; rows {rows}, distinct ids {distinct}, env rows {env_rows}; audit creates {creates}"
          f" (incl. a and c); verified {verified}/{args.concurrent} (perturbed predictions change metrics)")


if __name__ == "__main__":
    sys.exit(main())
