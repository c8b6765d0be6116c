"""CLI: ``submit``, ``leaderboard {serve,add-user,build}`` and ``feedback {queue,export,stats}``.

Web dependencies are imported inside the handlers so ``rlhf-gym --help`` stays light.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
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
    p.set_defaults(handler=_submit)

    lb = subparsers.add_parser("leaderboard", help="serve or build the leaderboard")
    lsub = lb.add_subparsers(dest="leaderboard_command", required=True, metavar="ACTION")
    s = lsub.add_parser("serve", help="run the leaderboard web server")
    s.add_argument("--db", default=DEFAULT_DB, help="SQLite file path or postgresql:// URL")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-body-mb", type=float, default=50.0)
    s.add_argument("--rate-limit", default="60/min", help="per-user submissions, e.g. 30/min; 0 disables")
    s.set_defaults(handler=_serve)
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
    st = fsub.add_parser("stats", help="human win rate (95%% bootstrap CI) and annotator agreement")
    st.add_argument("--db", default=DEFAULT_DB)
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.set_defaults(handler=_stats)


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _submit(args) -> int:
    from .validate import build_submission, content_hash

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else []
    doc = build_submission(_read_json(args.results), name=args.name, description=args.description,
                           model=args.model, url=args.url, seeds=seeds)
    if args.dir:
        return _submit_dir(doc, Path(args.dir))
    if not args.token:
        raise ValueError("--token (or $RLHF_GYM_TOKEN) is required with --server")
    data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(args.server.rstrip("/") + "/api/submissions", data=data, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {args.token}"})
    try:
        with urllib.request.urlopen(req, timeout=3600) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("detail", detail)
        except (json.JSONDecodeError, AttributeError):
            pass
        print(f"rlhf-gym submit: server answered {err.code}: {detail}", file=sys.stderr)
        return 1
    _print_outcome(body["id"], body["created"], body["verified"], body["mismatches"])
    print(f"{args.server.rstrip('/')}{body['url']}")
    assert body["id"] == content_hash(doc), "server hashed different content"
    return 0


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
    _print_outcome(verdict.id, created, verdict.verified, verdict.mismatches)
    print(path)
    return 0


def _print_outcome(sid: str, created: bool, verified: bool, mismatches: dict) -> None:
    print(f"{'accepted' if created else 'already present (identical content)'}: {sid}")
    print("verified: submitted metrics match the recomputed ones" if verified
          else "NOT verified: submitted metrics differ from the recomputed ones")
    for env_id, rows in mismatches.items():
        for key, row in rows.items():
            print(f"  {env_id} {key}: submitted {row['submitted']!r}, recomputed {row['recomputed']!r} ({row['status']})")


def _verifier():
    from .service import Verifier

    return Verifier()


def _serve(args) -> int:
    from . import require
    from .app import create_app

    uvicorn = require("uvicorn")
    app = create_app(args.db, max_body_mb=args.max_body_mb, rate_limit=args.rate_limit)
    # One worker: the rate limiter lives in process memory.
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
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
    (out / "submissions").mkdir(parents=True, exist_ok=True)
    copy_static(out)
    top = environment(static_prefix="static", link_prefix="submissions/", link_suffix=".html")
    (out / "index.html").write_text(top.get_template("index.html").render(board=data, rows=rows, static_site=True,
                                                                          home="index.html"), encoding="utf-8")
    sub_env = environment(static_prefix="../static", link_prefix="", link_suffix=".html")
    for sub in subs:
        (out / "submissions" / f"{sub['id']}.html").write_text(
            sub_env.get_template("submission.html").render(sub=sub, n_samples=20, static_site=True,
                                                           home="../index.html"), encoding="utf-8")
    (out / "leaderboard.md").write_text(markdown_board(data), encoding="utf-8")
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
        print(f"{s['env_id']} {s['system_a']} vs {s['system_b']}: human win rate of A {100 * s['win_rate_a']:.1f}%"
              f" [95% CI {100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}] over {s['n_pairs']} pairs"
              f" ({s['n_labels']} labels: {s['labels']}); agreement: {agree}")
    return 0
