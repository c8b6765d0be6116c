#!/usr/bin/env python
"""Human-feedback loop end to end, with a SIMULATED annotator driving the real page.

There is no human here, so the "annotators" are scripts: each one opens /compare in
headless Debian chromium (Playwright), logs in with its own token, reads the prompt and the
two responses off the page and presses the keyboard shortcut (1 = A, 2 = B, 3 = tie). Its
preference is the response with the higher sentence chrF against the real reply (the
dataset reference, from ``rlhf-gym data``), flipped at random 20% of the time, like
AlpacaFarm's noisy simulated annotators. The labels are therefore NOT human judgements;
the point is that every label goes through the same page, server and storage as a human's.

Steps:
  1. real bench results on rlhf_gym/Dialogue-v0 (``--agent retrieval``, ``lead``,
     ``reference``; generated here unless --results-dir has them), cut to the first
     --examples test examples so the demo takes minutes
  2. ``rlhf-gym feedback queue`` retrieval vs lead and reference vs lead
  3. a real ``rlhf-gym leaderboard serve`` on 127.0.0.1, two annotators labelling through
     the page; annotator-2 labels the first --overlap pairs again so agreement is defined
  4. ``rlhf-gym feedback export``, ``feedback stats``, ``train-rm --prefs --kind preference``

    python scripts/feedback_demo.py [--results-dir DIR] [--out-dir DIR] [--examples 30]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ENV = "rlhf_gym/Dialogue-v0"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FLIP = 0.2
KEYS = {"left": "1", "right": "2", "tie": "3"}


def cli(*args: str, capture: bool = True) -> str:
    cmd = [sys.executable, "-m", "rlhf_gym.cli", *args]
    print("$ rlhf-gym " + " ".join(args), flush=True)
    out = subprocess.run(cmd, check=True, text=True, capture_output=capture)
    return out.stdout if capture else ""


def norm(text: str) -> str:
    # Whitespace as rendered by the browser may differ from the JSON (trailing newline).
    return " ".join(text.split())


def subset(src: Path, dst: Path, ids: list[str]) -> Path:
    """The bench file cut to ``ids`` (the pairs to queue); scores are irrelevant to labelling."""
    doc = json.loads(src.read_text(encoding="utf-8"))
    block = doc["envs"][ENV]
    keep = set(ids)
    block["generations"] = [g for g in block["generations"] if g["id"] in keep]
    dst.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return dst


class SimulatedAnnotator:
    """Prefers the higher sentence chrF against the dataset reply; flips 20% of choices."""

    def __init__(self, name: str, references: dict[str, list[str]], seed: int):
        import sacrebleu

        self.name, self.references = name, references
        self.rng = random.Random(seed)
        self.chrf = lambda hyp, refs: sacrebleu.sentence_chrf(hyp, refs).score
        self.flips = 0

    def choose(self, prompt: str, left: str, right: str) -> str:
        refs = self.references[norm(prompt)]
        a, b = self.chrf(left, refs), self.chrf(right, refs)
        choice = "tie" if a == b else ("left" if a > b else "right")
        if choice != "tie" and self.rng.random() < FLIP:
            self.flips += 1
            choice = "right" if choice == "left" else "left"
        return choice


def label_through_page(page, url: str, token: str, annotator: SimulatedAnnotator, n: int, shot=None) -> int:
    page.goto(url + "/compare")
    page.fill("#token", token)
    page.click("text=Log in")
    if shot:
        page.screenshot(path=str(shot), full_page=True)
    done = 0
    for _ in range(n):
        if page.locator("#done").count():
            break
        prompt = page.inner_text(".prompt pre")
        left, right = page.inner_text("#resp-a pre"), page.inner_text("#resp-b pre")
        before = page.inner_text("#progress")
        choice = annotator.choose(prompt, left, right)
        with page.expect_navigation():
            page.keyboard.press(KEYS[choice])
        after = page.inner_text("#progress")
        if after == before:
            raise RuntimeError(f"{annotator.name}: pressing {KEYS[choice]} did not record a label ({after!r})")
        done += 1
    return done


def submit_real(url: str, db: Path, files: dict[str, Path]) -> str:
    """POST the full bench results (the server recomputes every metric) and a copy of lead
    with BLEU raised by 10, so the pages show verified rows and a flagged one."""
    import copy

    from rlhf_gym.leaderboard.validate import build_submission

    token = cli("leaderboard", "add-user", "submitter", "--db", str(db)).strip()
    tampered_id = ""
    for agent, f in files.items():
        doc = build_submission(json.loads(f.read_text(encoding="utf-8")), name=f"{agent} baseline", model=agent)
        docs = [doc]
        if agent == "lead":
            bad = copy.deepcopy(doc)
            bad["meta"]["name"] = "lead (BLEU tampered)"
            bad["results"]["envs"][ENV]["metrics"]["bleu"] += 10.0
            docs.append(bad)
        for d in docs:
            t0 = time.monotonic()
            req = urllib.request.Request(url + "/api/submissions", data=json.dumps(d).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=1800) as resp:
                body = json.loads(resp.read())
            while body["status"] == "pending":  # queued (202): the server's worker scores it
                time.sleep(0.5)
                with urllib.request.urlopen(f"{url}/api/submissions/{body['id']}?generations=false") as resp:
                    body = {**body, **json.loads(resp.read())}
            print(f"submitted {d['meta']['name']}: verified={body['verified']}"
                  f" ({time.monotonic() - t0:.0f}s until scored)", flush=True)
            if "tampered" in d["meta"]["name"]:
                tampered_id = body["id"]
    return tampered_id


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results-dir", help="dir with dialogue_{retrieval,lead,reference}.json from rlhf-gym bench")
    ap.add_argument("--out-dir", help="keep DB, prefs and reward head here (default: a temp dir)")
    ap.add_argument("--examples", type=int, default=30, help="test examples per system pair to queue")
    ap.add_argument("--overlap", type=int, default=40, help="pairs that annotator-2 also labels")
    ap.add_argument("--screenshots", help="also submit the three full bench results (and a BLEU-tampered copy of"
                    " lead) and save leaderboard.png, submission.png and compare.png here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="feedback_demo_"))
    out.mkdir(parents=True, exist_ok=True)
    print("NOTE: the annotators below are SIMULATED (sentence chrF vs the dataset reply, 20% random flips);"
          " no human labelled anything.", flush=True)

    res_dir = Path(args.results_dir or out)
    files = {}
    for agent in ("retrieval", "lead", "reference"):
        files[agent] = res_dir / f"dialogue_{agent}.json"
        if not files[agent].exists():
            cli("bench", "--agent", agent, "--envs", ENV, "--out", str(files[agent]))

    # The real reply for each prompt, read from the data CLI like a user would.
    references: dict[str, list[str]] = {}
    ids = []
    for line in cli("data", "--env", ENV, "--split", "test").splitlines():
        ex = json.loads(line)
        references.setdefault(norm(ex["prompt"]), []).extend(ex["references"])
        ids.append(ex["id"])
    ids = ids[:args.examples]

    db = out / "feedback.db"
    cut = {a: subset(f, out / f"cut_{a}.json", ids) for a, f in files.items()}
    print(cli("feedback", "queue", "--results", str(cut["retrieval"]), str(cut["lead"]), "--db", str(db)), end="")
    print(cli("feedback", "queue", "--results", str(cut["reference"]), str(cut["lead"]), "--db", str(db)), end="")
    tokens = {n: cli("leaderboard", "add-user", n, "--db", str(db)).strip() for n in ("annotator-1", "annotator-2")}

    from playwright.sync_api import sync_playwright

    from rlhf_gym.leaderboard.process import serve_subprocess

    with serve_subprocess(db, out / "server.log") as (url, _port, _server):
        tampered_id = None
        if args.screenshots:
            tampered_id = submit_real(url, db, files)
        annotators = {n: SimulatedAnnotator(n, references, seed) for seed, n in enumerate(tokens)}
        t0 = time.monotonic()
        counts = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            shots = Path(args.screenshots) if args.screenshots else None
            for name, n in (("annotator-1", 10_000), ("annotator-2", args.overlap)):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                counts[name] = label_through_page(page, url, tokens[name], annotators[name], n,
                                                  shot=shots / "compare.png" if shots and name == "annotator-2" else None)
                page.close()
            if shots:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url + "/")
                page.screenshot(path=str(shots / "leaderboard.png"), full_page=True)
                page.goto(f"{url}/submissions/{tampered_id}")
                page.screenshot(path=str(shots / "submission.png"), full_page=True)
                print(f"screenshots in {shots}", flush=True)
            browser.close()
        dt = time.monotonic() - t0
        stats = json.loads(urllib.request.urlopen(url + "/api/feedback/stats").read())["stats"]
    total = sum(counts.values())
    print(f"labels collected through the page: {total} ({counts}) in {dt:.1f}s;"
          f" simulated flips: { {n: a.flips for n, a in annotators.items()} }", flush=True)
    print(f"GET /api/feedback/stats: {json.dumps(stats)}", flush=True)

    prefs = out / "prefs.jsonl"
    print(cli("feedback", "export", "--out", str(prefs), "--db", str(db)), end="")
    print(cli("feedback", "stats", "--db", str(db)), end="")
    head = out / "human.safetensors"
    train = cli("train-rm", "--prefs", str(prefs), "--kind", "preference", "--out", str(head), "--quiet")
    print(train, end="")
    metrics_file = head.with_suffix(".json")
    if metrics_file.exists():
        info = json.loads(metrics_file.read_text())
        print("train-rm metrics:", json.dumps({k: v for k, v in info.items() if "acc" in k or k in ("n_train", "n_eval")}))
    print(f"artifacts in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
