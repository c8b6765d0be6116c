"""Over-optimisation curves attached to submissions: the committed real curve
(baselines/smollm2/overopt_dialogue_gpu/overopt.json, its env renamed to the tiny test env)
submitted over HTTP (TestClient on SQLite and a real PostgreSQL; the CLI against real uvicorn)
and with ``--dir`` + ``leaderboard build``; the server's refit checked against a fit computed
here with plain numpy; tampered fits flagged; bad curves refused with 422 naming the field while
what is stored stays; old databases (no ``overopt`` column) migrated and still rendered."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the server extra: pip install 'rlhf-gym[server]'")
from fastapi.testclient import TestClient  # noqa: E402

from rlhf_gym.cli import main  # noqa: E402
from rlhf_gym.leaderboard.app import create_app  # noqa: E402
from rlhf_gym.leaderboard.overopt_curve import MAX_BYTES, MAX_POINTS, compact, load_curve  # noqa: E402
from rlhf_gym.leaderboard.validate import content_hash  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "baselines" / "smollm2" / "overopt_dialogue_gpu" / "overopt.json"


@pytest.fixture(scope="module")
def report(tiny_env) -> dict:
    """The committed real report (texts and per-response scores included), on the tiny env."""
    doc = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    doc["env_id"] = tiny_env
    return doc


@pytest.fixture
def curve(report) -> dict:
    return compact(copy.deepcopy(report))


@pytest.fixture
def client(db_url, verifier, open_client):
    with open_client(db_url, verifier, "olga", "0") as c:
        yield c


def independent_gold_fit(report: dict) -> tuple[float, float]:
    """alpha, beta of gold gain = d (alpha - beta log d), d = sqrt(KL), by least squares written
    out here (not rlhf_gym.overopt's code)."""
    rows = sorted(report["rows"], key=lambda r: r["iteration"])
    start = rows[0]["sample"]["gold_mean"]
    d = np.array([math.sqrt(r["kl"]) for r in rows if r["kl"] > 0])
    gain = np.array([r["sample"]["gold_mean"] - start for r in rows if r["kl"] > 0])
    a = np.stack([d, -d * np.log(d)], axis=1)
    alpha, beta = np.linalg.solve(a.T @ a, a.T @ gain)
    return float(alpha), float(beta)


def post_and_wait(client, doc, wait_status) -> dict:
    r = client.post("/api/submissions", json=doc)
    assert r.status_code == 202, r.text
    return wait_status(client.get, r.json()["id"])


def test_compact_keeps_the_numbers_and_drops_texts(report, curve):
    assert len(json.dumps(report)) > 25_000 and len(json.dumps(curve)) < 6_000
    row = curve["rows"][1]
    assert "texts" not in row["sample"] and "gold_scores" not in row["sample"] and "policy" not in row
    assert row["kl"] == report["rows"][1]["kl"] and row["sample"]["gold_mean"] == report["rows"][1]["sample"]["gold_mean"]
    assert curve["fits"] == report["fits"]


def test_curve_over_http_is_refit_verified_and_shown(client, make_submission, curve, report, tiny_env, wait_status):
    plain = post_and_wait(client, make_submission(name="no curve"), wait_status)
    doc = make_submission(name="ppo with curve")
    doc["overopt"] = curve
    done = post_and_wait(client, doc, wait_status)
    assert done["status"] == "verified" and done["verified"] is True, done
    sub = client.get(f"/api/submissions/{done['id']}?generations=false").json()
    view = sub["overopt"]
    assert view["points_verified"] is False and view["fit_verified"] is True
    alpha, beta = independent_gold_fit(report)
    gold = view["fits"]["sample"]["gold"]
    assert gold["alpha"] == pytest.approx(alpha, rel=1e-9) and gold["beta"] == pytest.approx(beta, rel=1e-9)
    assert view["gold_peak"]["peak_sqrt_kl"] == pytest.approx(math.exp(alpha / beta - 1), rel=1e-9)
    assert [r["iteration"] for r in view["rows"]] == [0, 10, 30, 50, 80, 100]
    assert view["rows"][2]["sqrt_kl"] == pytest.approx(math.sqrt(report["rows"][2]["kl"]))
    assert all(c["status"] == "match" for c in view["comparison"].values()) and len(view["comparison"]) > 20
    assert client.get(f"/api/submissions/{plain['id']}").json()["overopt"] is None

    page = client.get(f"/submissions/{done['id']}").text
    assert 'class="plot overopt"' in page and "self-reported" in page and "✓ fit recomputed, matches" in page
    assert "gold fit peaks at KL 0.718" in page
    index = client.get("/").text
    assert "Over-optimisation of the training runs" in index and index.count('class="plot overopt"') == 1
    assert f'/submissions/{done["id"]}#overopt' in index
    old_page = client.get(f"/submissions/{plain['id']}").text  # no curve: nothing extra
    assert "overopt" not in old_page and "✓ verified" in old_page


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tampered_fit_or_gain_is_flagged(client, make_submission, curve, tiny_env, wait_status):
    doc = make_submission(name="tampered fit")
    doc["overopt"] = copy.deepcopy(curve)
    doc["overopt"]["fits"]["sample"]["gold"]["peak_kl"] *= 3  # claims a later peak
    doc["overopt"]["rows"][3]["sample"]["gold_gain"] += 0.05
    done = post_and_wait(client, doc, wait_status)
    assert done["status"] == "mismatch" and done["verified"] is False
    sub = client.get(f"/api/submissions/{done['id']}").json()
    view = sub["overopt"]
    bad = {k: v for k, v in view["comparison"].items() if v["status"] != "match"}
    assert sorted(bad) == ["fits.sample.gold.peak_kl", "iteration 50.sample.gold_gain"]
    assert bad["fits.sample.gold.peak_kl"]["recomputed"] == pytest.approx(curve["fits"]["sample"]["gold"]["peak_kl"])
    assert view["fit_verified"] is False and all(e["verified"] for e in sub["envs"].values())  # the metrics match
    again = client.post("/api/submissions", json=doc).json()  # the stored verdict names the curve
    assert again["status"] == "mismatch" and sorted(again["mismatches"]["overopt"]) == sorted(bad)
    page = client.get(f"/submissions/{done['id']}").text
    assert "the submitted fit differs from the one recomputed" in page
    board = client.get("/api/leaderboard").json()  # the overall row is the submission's verdict; the env row its env's
    assert board["overall"][0]["verified"] is False and board["envs"][tiny_env][0]["verified"] is True


def _rows_without_extras(curve: dict, n: int) -> list[dict]:
    base = curve["rows"][1]
    return [{"iteration": i, "kl": 0.01 * i, "sample": {"n": 32, "proxy_mean": base["sample"]["proxy_mean"],
                                                        "gold_mean": base["sample"]["gold_mean"]}} for i in range(n)]


def _fat_rows(curve: dict, n: int) -> list[dict]:
    """n points with every statistic filled in at full precision (about 450 bytes each)."""
    full = curve["rows"][1]
    return [{**full, "iteration": i, "kl": 0.0123456789012345 * i} for i in range(n)]


def _drop_gold_mean(c):
    del c["rows"][1]["sample"]["gold_mean"]


BAD = [
    ("missing field", _drop_gold_mean, "overopt.rows[1].sample.gold_mean", "must be a number, got null"),
    ("NaN", lambda c: c["rows"][2]["sample"].update(proxy_mean=float("nan")), "overopt.rows[2].sample.proxy_mean",
     "must be a finite number"),
    ("negative KL", lambda c: c["rows"][1].update(kl=-0.2), "overopt.rows[1].kl", "never negative"),
    ("too many points", lambda c: c.update(rows=_rows_without_extras(c, MAX_POINTS + 1)), "overopt.rows",
     f"more than the {MAX_POINTS} accepted"),
    ("over the size limit", lambda c: c.update(rows=_fat_rows(c, MAX_POINTS)), "overopt",
     f"over the {MAX_BYTES // 1024} KiB limit"),
    ("texts left in", lambda c: c["rows"][1]["sample"].update(texts=["hi"]), "overopt.rows[1].sample.texts",
     "unknown field"),
    ("no start", lambda c: c["rows"].pop(0), "overopt.rows", "iteration 0"),
    ("one point", lambda c: c.update(rows=c["rows"][:2]), "overopt.rows", "at least 2 checkpoints with kl > 0"),
    ("other task", lambda c: c.update(env_id="rlhf_gym/Elsewhere-v1"), "overopt.env_id", "not one of this submission"),
    ("empty", lambda c: c.clear(), "overopt.rows", "non-empty list"),
]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bad_curves_are_422_naming_the_problem_and_lose_nothing(client, make_submission, curve, wait_status):
    stored = post_and_wait(client, {**make_submission(name="stored first"), "overopt": curve}, wait_status)
    for label, edit, field, message in BAD:
        doc = make_submission(name=f"bad: {label}")
        doc["overopt"] = copy.deepcopy(curve)
        edit(doc["overopt"])
        r = client.post("/api/submissions", content=json.dumps(doc), headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (label, r.text)
        assert r.json()["field"] == field and message in r.json()["detail"], (label, r.json())
    board = client.get("/api/leaderboard").json()
    assert [o["id"] for o in board["overall"]] == [stored["id"]] and board["queue"]["pending"] == 0
    assert client.get(f"/api/submissions/{stored['id']}").json()["overopt"]["fit_verified"] is True


def test_cli_dir_submission_with_curve_and_static_build(tmp_path, make_results, report, tiny_env, verifier, capsys):
    from rlhf_gym.leaderboard.cli import build_site

    run = tmp_path / "run"
    run.mkdir()
    (run / "overopt.json").write_text(json.dumps(report), encoding="utf-8")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(make_results()))
    lb = tmp_path / "leaderboards"
    assert main(["submit", str(results), "--dir", str(lb), "--name", "plain"]) == 0
    assert main(["submit", str(results), "--dir", str(lb), "--name", "with curve", "--overopt", str(run)]) == 0
    out = capsys.readouterr().out
    assert "over-optimisation curve" in out and "fit recomputed and matches" in out and "peaks at KL 0.718" in out
    filed = [json.loads(f.read_text()) for f in sorted(lb.glob("*.json"))]
    with_curve = next(d for d in filed if d["meta"]["name"] == "with curve")
    assert with_curve["overopt"] == load_curve(run) and "texts" not in json.dumps(with_curve)

    # A bad curve: a clear error, nothing filed, what was filed untouched.
    bad = copy.deepcopy(report)
    bad["rows"][4]["kl"] = -1.0
    (run / "overopt.json").write_text(json.dumps(bad), encoding="utf-8")
    before = sorted(p.name for p in lb.iterdir())
    assert main(["submit", str(results), "--dir", str(lb), "--name", "bad curve", "--overopt", str(run)]) == 2
    err = capsys.readouterr().err
    assert "overopt.rows[4].kl" in err and "never negative" in err
    assert sorted(p.name for p in lb.iterdir()) == before
    assert main(["submit", str(results), "--dir", str(lb), "--overopt", str(tmp_path / "nowhere")]) == 2
    assert "no such file or directory" in capsys.readouterr().err

    info = build_site(lb, tmp_path / "site", verifier=verifier)
    assert info["submissions"] == 2
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count('class="plot overopt"') == 1 and "Over-optimisation of the training runs" in index
    pages = {p.name: p.read_text() for p in (tmp_path / "site" / "submissions").glob("*.html")}
    assert pages[f"{content_hash(with_curve)}.html"].count('class="plot overopt"') == 1
    plain = next(d for d in filed if d["meta"]["name"] == "plain")
    assert "overopt" not in pages[f"{content_hash(plain)}.html"]
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "| with curve | " + tiny_env + " | 6 | gold fit peaks at KL 0.718" in md


def test_cli_submit_over_http_with_curve(tmp_path, verifier, make_results, report, live_server, capsys):
    app = create_app(str(tmp_path / "lb.db"), verifier=verifier, poll_s=0.2)
    token = app.state.db.add_user("pat")
    path = tmp_path / "overopt.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(make_results()))
    with live_server(app) as srv:
        assert main(["submit", str(results), "--server", srv.url, "--token", token, "--name", "http curve",
                     "--overopt", str(path)]) == 0
        out = capsys.readouterr().out
        assert "verified: submitted metrics match" in out and "fit recomputed and matches" in out
        sid = out.split("accepted: ")[1].split()[0]
        import httpx

        view = httpx.get(f"{srv.url}/api/submissions/{sid}?generations=false").json()["overopt"]
        assert view["fit_verified"] and not view["points_verified"] and view["env_id"] == report["env_id"]


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_a_database_from_before_curves_is_migrated_and_its_submissions_still_render(db_url, verifier, make_submission,
                                                                                    curve):
    from rlhf_gym.leaderboard.db import Database
    from rlhf_gym.leaderboard.render import environment
    from rlhf_gym.leaderboard.service import Leaderboard

    old = Leaderboard(Database(db_url), verifier)
    sid = old.submit(make_submission(name="from before curves"), user=None).id
    with old.db.tx(write=True) as tx:  # make it the schema of the version before this column
        tx.execute("ALTER TABLE submissions DROP COLUMN overopt")
    board = Leaderboard(Database(db_url), verifier)  # opening it adds the column back, empty
    sub = board.submission(sid)
    assert sub["overopt"] is None and sub["verified"] is True
    page = environment().get_template("submission.html").render(sub=sub, n_samples=5)
    assert "from before curves" in page and "overopt" not in page
    new = board.submit({**make_submission(name="after"), "overopt": curve}, user=None)
    assert new.verified is True and board.submission(new.id)["overopt"]["fit_verified"] is True
    assert [c["name"] for c in board.curves()] == ["after"]
