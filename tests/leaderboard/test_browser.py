"""Browser tests: Debian chromium driven by Playwright against real uvicorn. Screenshots go
to leaderboards/screenshots/ (committed, so reviewers can see the pages)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
# The committed screenshots in leaderboards/screenshots/ show real built-in-env data and come
# from scripts/feedback_demo.py --screenshots; these tests use a tiny env, so they write
# their screenshots elsewhere (set RLHF_GYM_TEST_SCREENSHOTS to keep them).
SHOTS = Path(os.environ.get("RLHF_GYM_TEST_SCREENSHOTS") or tempfile.mkdtemp(prefix="lb_test_shots_"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found: run scripts/install-browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def test_leaderboard_page_sorts_and_links(browser, tmp_path, verifier, make_submission, bad_predictions,
                                          tiny_env, live_server):
    from rlhf_gym.leaderboard.app import create_app
    from rlhf_gym.leaderboard.service import Leaderboard

    app = create_app(str(tmp_path / "b.db"), verifier=verifier)
    board: Leaderboard = app.state.leaderboard
    board.submit(make_submission(name="lead (copy source)", model="lead", url="https://example.org"), user="ci")
    board.submit(make_submission(name="echo baseline", model="echo", predictions=bad_predictions), user="ci")
    tampered = make_submission(name="tampered BLEU", model="lead")
    tampered["results"]["envs"][tiny_env]["metrics"]["bleu"] += 20
    board.submit(tampered, user="ci")
    with live_server(app) as srv:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(srv.url + "/")
        table = page.locator(f"h2[id='{tiny_env}'] + table")
        names = table.locator("tbody tr td:nth-child(2)").all_inner_texts()
        assert names[-1] == "echo baseline"  # ranked by BLEU, best first
        table.locator("th", has_text="BLEU").click()  # ascending
        assert table.locator("tbody tr td:nth-child(2)").all_inner_texts()[0] == "echo baseline"
        table.locator("th", has_text="BLEU").click()  # descending
        assert table.locator("tbody tr td:nth-child(2)").all_inner_texts()[-1] == "echo baseline"
        assert page.locator("svg.plot circle").count() >= 3
        assert page.locator("text=✗").count() >= 1 and page.locator("text=✓").count() >= 2
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "leaderboard.png"), full_page=True)

        page.click("text=tampered BLEU >> nth=0")
        assert "submitted metrics differ" in page.inner_text("h1")
        assert page.locator("tr.mismatch td:first-child").all_inner_texts() == ["bleu"]
        assert page.locator("table.samples tbody tr").count() == 6
        page.screenshot(path=str(SHOTS / "submission.png"), full_page=True)


def test_comparison_page_keyboard_labelling(browser, tmp_path, live_server):
    from rlhf_gym.leaderboard.app import create_app
    from rlhf_gym.leaderboard.feedback import feedback_stats, queue_pairs
    from rlhf_gym.leaderboard.service import Verifier

    env = "rlhf_gym/Dialogue-v0"
    prompts = {"c1": "User: any tips for a rainy weekend?\nAssistant:", "c2": "User: what should I cook tonight?\nAssistant:",
               "c3": "User: how do I start running?\nAssistant:"}
    answers = {"ppo": {"c1": "Visit a museum, then read a good book with tea.", "c2": "A quick vegetable stir fry.",
                       "c3": "Start with short, easy runs three times a week."},
               "lead": {"c1": "Rain.", "c2": "Food.", "c3": "Run."}}
    files = []
    for agent, resp in answers.items():
        gens = [{"id": k, "prompt": prompts[k], "prediction": v, "references": ["-"]} for k, v in resp.items()]
        f = tmp_path / f"{agent}.json"
        f.write_text(json.dumps({"schema_version": 1, "agent": {"name": agent},
                                 "envs": {env: {"env_id": env, "metrics": {}, "generations": gens}}}))
        files.append(f)
    app = create_app(str(tmp_path / "fb.db"),
                     verifier=Verifier(scorer=lambda *a, **k: {}, env_ids=lambda: [], schema_version=1))
    queue_pairs(app.state.db, *files)
    token = app.state.db.add_user("annotator-1")
    with live_server(app) as srv:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(srv.url + "/compare")
        page.fill("#token", token)
        page.click("text=Log in")
        assert "0 / 3 labelled" in page.inner_text("#progress")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)
        # Typing a comment must not fire the shortcuts.
        page.fill("#comment", "")
        page.type("#comment", "12ab tx")
        assert "0 / 3 labelled" in page.inner_text("#progress")
        page.locator("#comment").blur()
        # Pick the longer (PPO) answer with the keyboard: 1 / a = left, 2 / b = right.
        for i, keys in enumerate((("1", "2"), ("a", "b"), ("1", "2"))):
            left = page.inner_text("#resp-a pre")
            page.keyboard.press(keys[0] if left in answers["ppo"].values() else keys[1])
            page.wait_for_selector(f"text={i + 1} / 3 labelled")
        assert page.locator("#done").is_visible()
        # The labels show up in the leaderboard page's human-feedback table.
        page.goto(srv.url + "/")
        row = page.locator("table#human tbody tr").all_inner_texts()
        # 3 of 3: a rate of 1 with Wilson's non-degenerate interval, not [100.0, 100.0]
        from rlhf_gym.leaderboard.render import rate_pct
        from rlhf_gym.metrics import wilson_interval

        cell = rate_pct(1.0, *wilson_interval(3, 3))
        assert cell.startswith("100.0 [43.") and cell.endswith(", 100.0]")
        assert len(row) == 1 and f"ppo\tlead\t{cell}\t3\t3" in row[0], row
    [s] = feedback_stats(app.state.db)
    assert s["win_rate_a"] == 1.0 and s["n_labels"] == 3
    with app.state.db.tx() as tx:
        comments = [r["comment"] for r in tx.all("SELECT comment FROM feedback_labels ORDER BY id")]
    assert comments == ["12ab tx", "", ""]
