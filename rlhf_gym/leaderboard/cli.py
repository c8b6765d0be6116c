"""CLI: ``submit``, ``leaderboard {serve,worker,add-user,build}`` and ``feedback {queue,export,stats}``.

Web dependencies are imported inside the handlers so ``rlhf-gym --help`` stays light.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_DB = os.environ.get("RLHF_GYM_LEADERBOARD_DB", "leaderboard.db")


def register(subparsers) -> None:
    p = subparsers.add_parser("submit", help="submit a results JSON to a leaderboard server or directory")
    p.add_argument("results", help="results JSON written by `rlhf-gym bench --out` (generations included)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="leaderboard server base URL, e.g. http://127.0.0.1:8000")
    where.add_argument("--dir", help="file the submission into this directory (pull-request workflow)")
    p.add_argument("--token", default=os.environ.get("RLHF_GYM_TOKEN"), help="API token (or $RLHF_GYM_TOKEN)")
    p.add_argument("--name", help="system name (default: the results' agent name)")
    p.add_argument("--description", default="")
    p.add_argument("--model", default="", help="model id or checkpoint")
    p.add_argument("--url", default="", help="code / paper URL (http or https)")
    p.add_argument("--seeds", default="", help="comma-separated training seeds, e.g. 0,1,2")
    p.add_argument("--overopt", metavar="RUN_DIR|overopt.json", default=None,
                   help="attach the training run's over-optimisation curve (`rlhf-gym overopt RUN_DIR` writes "
                        "RUN_DIR/overopt.json): its points are shown as self-reported, its fits are recomputed")
    p.add_argument("--wait", type=float, default=600, metavar="SECONDS",
                   help="with --server: follow the queued submission until it is scored, at most this long "
                        "(default 600; 0 returns once it is accepted)")
    p.set_defaults(handler=_submit)

    lb = subparsers.add_parser("leaderboard", help="serve or build the leaderboard")
    lsub = lb.add_subparsers(dest="leaderboard_command", required=True, metavar="ACTION")
    s = lsub.add_parser("serve", help="run the leaderboard web server")
    s.add_argument("--db", default=DEFAULT_DB, help="SQLite file path or postgresql:// URL")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-body-mb", type=float, default=50.0)
    s.add_argument("--rate-limit", default="60/min", help="per-user submissions, e.g. 30/min; 0 disables")
    _scoring_args(s)
    s.add_argument("--workers", type=int, default=1,
                   help="scoring threads started with the server (default 1; 0: score with separate "
                        "`rlhf-gym leaderboard worker` processes on the same --db)")
    s.set_defaults(handler=_serve)
    w = lsub.add_parser("worker", help="score queued submissions (a process beside `serve --workers 0`, or more)")
    w.add_argument("--db", default=DEFAULT_DB, help="SQLite file path or postgresql:// URL")
    _scoring_args(w)
    w.add_argument("--once", action="store_true", help="score what is queued now, then exit")
    w.set_defaults(handler=_worker)
    u = lsub.add_parser("add-user", help="create a submitter/annotator and print its token once")
    u.add_argument("name")
    u.add_argument("--db", default=DEFAULT_DB)
    u.set_defaults(handler=_add_user)
    b = lsub.add_parser("build", help="verify leaderboards/*.json and render a static site")
    b.add_argument("--dir", default="leaderboards")
    b.add_argument("--out", default="site")
    b.set_defaults(handler=_build)

    fb = subparsers.add_parser("feedback", help="human pairwise feedback")
    fsub = fb.add_subparsers(dest="feedback_command", required=True, metavar="ACTION")
    q = fsub.add_parser("queue", help="queue pairs from two results files for labelling")
    q.add_argument("--results", nargs=2, required=True, metavar=("A.json", "B.json"))
    q.add_argument("--db", default=DEFAULT_DB)
    q.set_defaults(handler=_queue)
    e = fsub.add_parser("export", help="write preference JSONL for `rlhf-gym train-rm --prefs`")
    e.add_argument("--out", required=True)
    e.add_argument("--db", default=DEFAULT_DB)
    e.set_defaults(handler=_export)
    st = fsub.add_parser("stats", help="human win rate (95%% Wilson CI) and annotator agreement")
    st.add_argument("--db", default=DEFAULT_DB)
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.set_defaults(handler=_stats)


def _scoring_args(p) -> None:
    from .jobs import DEFAULT_LEASE_S, DEFAULT_POLL_S

    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="score only the first N test examples of each env (a small suite for demos and load "
                        "tests; submissions must come from `rlhf-gym bench --limit N`)")
    p.add_argument("--lease-s", type=float, default=DEFAULT_LEASE_S,
                   help=f"a scoring job's lease, renewed while it runs; a crashed worker's job is taken over "
                        f"this long after its last renewal (default {DEFAULT_LEASE_S:g})")
    p.add_argument("--poll-s", type=float, default=DEFAULT_POLL_S,
                   help="how often an idle worker looks for jobs queued by other processes "
                        f"(default {DEFAULT_POLL_S:g})")


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _submit(args) -> int:
    from .client import SubmitError, submit
    from .validate import build_submission, content_hash

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else []
    doc = build_submission(_read_json(args.results), name=args.name, description=args.description,
                           model=args.model, url=args.url, seeds=seeds)
    if args.overopt:
        _attach_overopt(doc, args.overopt)
    if args.dir:
        return _submit_dir(doc, Path(args.dir))
    if not args.token:
        raise ValueError("--token (or $RLHF_GYM_TOKEN) is required with --server")
    base = args.server.rstrip("/")
    try:
        body = submit(base, doc, args.token, wait_s=max(0.0, args.wait))
    except SubmitError as err:
        print(f"rlhf-gym submit: {err}", file=sys.stderr)
        return 1
    if body["id"] != content_hash(doc):
        raise RuntimeError(f"the server stored id {body['id']}, not this document's hash {content_hash(doc)}")
    print(f"{'accepted' if body['created'] else 'already present (identical content)'}: {body['id']}")
    if body.get("requeued"):
        print("its earlier scoring had failed on the server side: queued again")
    status = body.get("status")
    if status in ("verified", "mismatch"):
        _print_verdict(body["verified"], body.get("mismatches") or {}, body.get("overopt"))
    elif status == "failed":
        err = body.get("error") or {}
        where = f" (field {err['field']})" if err.get("field") else ""
        print(f"scoring FAILED ({err.get('kind')}): {err.get('message')}{where}", file=sys.stderr)
        print(f"{base}{body['url']}")
        return 1
    else:
        waited = f", not scored within --wait {args.wait:g} s" if args.wait else ""
        print(f"pending: queued for scoring{waited}; follow it at {base}{body['status_url']}")
    print(f"{base}{body['url']}")
    return 0


def _attach_overopt(doc: dict, path: str) -> None:
    """Add the compacted curve of ``path`` and check it here, before anything is sent or filed."""
    from .overopt_curve import load_curve, validate_curve
    from .validate import SubmissionError

    doc["overopt"] = load_curve(path)
    envs = (doc.get("results") or {}).get("envs") or {}
    try:
        validate_curve(doc["overopt"], list(envs) if isinstance(envs, dict) else [])
    except SubmissionError as err:
        raise ValueError(f"--overopt {path}: {err}") from None


def _submit_dir(doc: dict, directory: Path) -> int:
    from .validate import canonical_json, content_hash

    # Verify before filing, so a pull request never carries a submission the build rejects.
    verdict = _verifier().verify(doc)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{content_hash(doc)}.json"
    created = not path.exists()
    if created:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(canonical_json(doc) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    _print_outcome(verdict.id, created, verdict.verified, verdict.mismatches, verdict.overopt)
    print(path)
    return 0


def _print_outcome(sid: str, created: bool, verified: bool, mismatches: dict, overopt: dict | None = None) -> None:
    print(f"{'accepted' if created else 'already present (identical content)'}: {sid}")
    _print_verdict(verified, mismatches, overopt)


def _print_verdict(verified: bool, mismatches: dict, overopt: dict | None = None) -> None:
    print("verified: submitted metrics match the recomputed ones" if verified
          else "NOT verified: submitted metrics differ from the recomputed ones")
    if overopt is not None:
        _print_curve(overopt)
    for env_id, rows in mismatches.items():
        for key, row in rows.items():
            print(f"  {env_id} {key}: submitted {row['submitted']!r}, recomputed {row['recomputed']!r}"
                  f" ({row['status']})")


def _print_curve(view: dict) -> None:
    peak = view.get("gold_peak")
    fit = view["fits"].get(view["decoding"], {}).get("gold", {})
    where = (f"gold fit peaks at KL {peak['peak_kl']:.3g} (sqrt {peak['peak_sqrt_kl']:.3g}, gain {peak['peak_gain']:+.3g})"
             if peak else "gold fit has no peak (beta <= 0)" if "beta" in fit else f"no gold fit ({fit.get('error')})")
    print(f"over-optimisation curve ({view['env_id']}, {len(view['rows'])} points, self-reported): fit "
          f"{'recomputed and matches' if view['fit_verified'] else 'DIFFERS from the one recomputed from the points'}"
          f"; {where}")


def _verifier():
    from .service import Verifier

    return Verifier()


def _serve(args) -> int:
    from . import require
    from .app import create_app
    from .service import Verifier

    uvicorn = require("uvicorn")
    app = create_app(args.db, verifier=Verifier(limit=args.limit), max_body_mb=args.max_body_mb,
                     rate_limit=args.rate_limit, workers=args.workers, lease_s=args.lease_s, poll_s=args.poll_s)
    # One uvicorn process: the rate limiter lives in process memory (scoring workers may be more).
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _worker(args) -> int:
    import logging
    import signal
    import threading

    from .db import Database
    from .jobs import ScoringWorker
    from .service import Leaderboard, Verifier

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    board = Leaderboard(Database(args.db), Verifier(limit=args.limit))
    worker = ScoringWorker(board, lease_s=args.lease_s, poll_s=args.poll_s, name="worker")
    if args.once:
        n = worker.run_until_idle()
        print(f"scored {n} queued submissions")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    print(f"worker {worker.owner} scoring the queue of {args.db}; Ctrl-C stops after the current job", file=sys.stderr)
    while not stop.wait(1.0):
        pass
    worker.stop(timeout=60)
    return 0


def _add_user(args) -> int:
    from .db import Database

    token = Database(args.db).add_user(args.name)
    print(f"created user {args.name!r}; token (shown once, store it now):", file=sys.stderr)
    print(token)
    return 0


def build_site(directory: str | Path, out: str | Path, *, verifier=None) -> dict:
    """Verify every ``DIR/*.json`` submission and render ``OUT/index.html``,
    ``OUT/submissions/<id>.html``, ``OUT/leaderboard.md`` and ``OUT/leaderboard.json``."""
    from .db import Database
    from .render import copy_static, environment, markdown_board
    from .service import Leaderboard, Verifier, build_board
    from .validate import SubmissionError, content_hash

    directory, out = Path(directory), Path(out)
    files = sorted(directory.glob("*.json"))
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        board = Leaderboard(Database(Path(tmp) / "build.db"), verifier or Verifier())
        for f in files:
            doc = _read_json(str(f))
            if f.stem != content_hash(doc):
                problems.append(f"{f}: file name does not match its content hash {content_hash(doc)} (edited?)")
                continue
            try:
                board.submit(doc, user=None, source=f"file:{f.name}")
            except SubmissionError as err:
                problems.append(f"{f}: {err}")
        if problems:
            raise ValueError("invalid submissions:\n  " + "\n  ".join(problems))
        rows = board.rows()
        data = build_board(list(rows))
        subs = [board.submission(r["id"]) for r in data["overall"]]
        curves = board.curves(order=[r["id"] for r in data["overall"]])
    (out / "submissions").mkdir(parents=True, exist_ok=True)
    copy_static(out)
    top = environment(static_prefix="static", link_prefix="submissions/", link_suffix=".html")
    (out / "index.html").write_text(top.get_template("index.html").render(board=data, rows=rows, static_site=True,
                                                                          home="index.html", curves=curves),
                                     encoding="utf-8")
    sub_env = environment(static_prefix="../static", link_prefix="", link_suffix=".html")
    for sub in subs:
        (out / "submissions" / f"{sub['id']}.html").write_text(
            sub_env.get_template("submission.html").render(sub=sub, n_samples=20, static_site=True,
                                                           home="../index.html"), encoding="utf-8")
    (out / "leaderboard.md").write_text(markdown_board(data, curves), encoding="utf-8")
    (out / "leaderboard.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return {"submissions": len(subs), "out": str(out)}


def _build(args) -> int:
    info = build_site(args.dir, args.out)
    print(f"built {info['submissions']} submissions into {info['out']}/ (index.html, leaderboard.md)")
    return 0


def _queue(args) -> int:
    from .db import Database
    from .feedback import queue_pairs

    info = queue_pairs(Database(args.db), *args.results)
    print(f"{info['system_a']} vs {info['system_b']}: {info['added']} pairs queued, {info['already_queued']} already"
          f" queued, {info['identical_skipped']} identical responses skipped, {info['unmatched']} ids in one file only")
    return 0


def _export(args) -> int:
    from .db import Database
    from .feedback import export_preferences

    info = export_preferences(Database(args.db), args.out)
    print(f"wrote {info['written']} preferences to {args.out} ({info['skipped_ties']} ties / both-bad skipped)")
    return 0


def _stats(args) -> int:
    from rlhf_gym.metrics import format_rate

    from .db import Database
    from .feedback import feedback_stats

    stats = feedback_stats(Database(args.db))
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    if not stats:
        print("no labels yet")
    for s in stats:
        agree = ("–" if s["raw_agreement"] is None
                 else f"{100 * s['raw_agreement']:.1f}% raw, kappa {s['cohen_kappa']:.3f} on {s['n_double']} pairs")
        mean, interval = format_rate({"mean": s["win_rate_a"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}, 1,
                                     percent=True).split(" ", 1)
        print(f"{s['env_id']} {s['system_a']} vs {s['system_b']}: human win rate of A {mean}% (95% CI {interval})"
              f" over {s['n_pairs']} pairs"
              f" ({s['n_labels']} labels: {s['labels']}); agreement: {agree}")
    return 0
