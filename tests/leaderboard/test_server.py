"""Real uvicorn on 127.0.0.1: the CLI client (and its error reports), raw HTTP errors, 100
concurrent submissions stored exactly once (SQLite and PostgreSQL), and the file-based
pull-request workflow with the static build."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("uvicorn", reason="needs the server extra: pip install 'rlhf-gym[server]'")
httpx = pytest.importorskip("httpx")

from rlhf_gym.cli import main  # noqa: E402
from rlhf_gym.leaderboard.app import create_app  # noqa: E402
from rlhf_gym.leaderboard.client import SubmitError, post_json  # noqa: E402
from rlhf_gym.leaderboard.validate import content_hash  # noqa: E402


def test_cli_submit_over_http_and_errors(tmp_path, verifier, make_results, tiny_env, live_server, capsys):
    app = create_app(str(tmp_path / "lb.db"), verifier=verifier, max_body_mb=0.5, poll_s=0.2)
    token = app.state.db.add_user("carol")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(make_results()))
    with live_server(app) as srv:
        args = ["submit", str(results), "--server", srv.url, "--token", token, "--name", "cli run",
                "--url", "https://example.org/code", "--seeds", "0,1,2"]
        assert main(args) == 0  # waits for the worker's verdict
        out = capsys.readouterr().out
        assert "accepted:" in out and "verified: submitted metrics match" in out
        assert main(args) == 0
        assert "already present (identical content)" in capsys.readouterr().out
        assert main(args[:-2] + ["--seeds", "3", "--wait", "0"]) == 0  # other content, not waited for
        assert "pending: queued for scoring" in capsys.readouterr().out
        assert main(["submit", str(results), "--server", srv.url, "--token", "rlg_bad"]) == 1
        assert "server answered 401: invalid token" in capsys.readouterr().err

        sub = httpx.get(f"{srv.url}/api/leaderboard").json()["overall"]
        assert any(s["name"] == "cli run" for s in sub)
        ids = {s["id"] for s in sub if s["name"] == "cli run"}
        assert [0, 1, 2] in [httpx.get(f"{srv.url}/api/submissions/{i}").json()["seeds"] for i in ids]

        # A lying Content-Length is caught too: the header says small, the stream is big.
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.putrequest("POST", "/api/submissions")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"x" * 65536
        try:
            for _ in range(12):  # 768 KiB > 0.5 MiB
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close as soon as it has answered 413
        assert conn.getresponse().status == 413
        r = httpx.post(f"{srv.url}/api/submissions", content=b"{oops", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
        assert httpx.get(f"{srv.url}/").status_code == 200


def test_cli_reports_413_422_429_even_when_the_server_does_not_read_the_body(tmp_path, verifier, make_results,
                                                                             tiny_env, live_server, capsys):
    app = create_app(str(tmp_path / "lb.db"), verifier=verifier, max_body_mb=0.25, rate_limit="2/min", workers=0)
    token = app.state.db.add_user("erin")
    small = tmp_path / "small.json"
    small.write_text(json.dumps(make_results()))
    big = make_results()
    for g in big["envs"][tiny_env]["generations"]:
        g["prediction"] = "word " * 20_000  # 6 x 100 kB: over the 0.25 MiB limit
    big_file = tmp_path / "big.json"
    big_file.write_text(json.dumps(big))
    bad = make_results()
    bad["envs"][tiny_env]["generations"].pop()
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps(bad))
    with live_server(app) as srv:
        submit = ["--server", srv.url, "--token", token, "--wait", "0"]
        assert main(["submit", str(big_file), *submit]) == 1
        err = capsys.readouterr().err
        assert "server answered 413: request body larger than 262144 bytes" in err and "--max-body-mb" in err
        assert main(["submit", str(bad_file), *submit]) == 1
        err = capsys.readouterr().err
        assert "server answered 422" in err and "1 missing ids, e.g. t5" in err
        assert "(field results.envs['rlhf_gym/LbTiny-v0'].generations)" in err
        assert main(["submit", str(small), *submit]) == 0  # the second post this minute (a 413 does not count)
        assert "pending: queued for scoring" in capsys.readouterr().out
        assert main(["submit", str(small), *submit]) == 1
        err = capsys.readouterr().err
        assert "server answered 429" in err and "rate limit of 2 submissions per 60s exceeded for erin" in err
        assert "retry after" in err

        # Without Expect: 100-continue (a server that ignores it, or TLS) the body is sent in full
        # while the server has already answered and closed: still a clear answer or error, never
        # a raw broken pipe.
        data = big_file.read_bytes() * 8
        try:
            resp = post_json(srv.url, "/api/submissions", data, {"Authorization": f"Bearer {token}"},
                             expect_continue=False)
            assert resp.status == 413
        except SubmitError as err:
            assert "closed the connection" in str(err) and "--max-body-mb" in str(err)
    with app.state.db.tx() as tx:  # only the small one was queued (workers=0: nothing scores it here)
        assert tx.one("SELECT COUNT(*) AS n FROM scoring_jobs WHERE status = 'pending'")["n"] == 1


def test_100_concurrent_submissions_stored_exactly_once(tmp_path, verifier, make_submission, live_server, wait_idle):
    app = create_app(str(tmp_path / "conc.db"), verifier=verifier, rate_limit="0", poll_s=0.2)
    token = app.state.db.add_user("dave")
    base = make_submission()
    docs = []
    for i in range(100):
        d = json.loads(json.dumps(base))
        d["meta"]["name"] = f"system {i:03d}"
        docs.append(d)
    # Half the ids are posted twice at once: the racing duplicate must not create a row.
    posts = docs + docs[:20]
    with live_server(app) as srv, httpx.Client(base_url=srv.url, timeout=120,
                                               headers={"Authorization": f"Bearer {token}"},
                                               limits=httpx.Limits(max_connections=120)) as client:
        with ThreadPoolExecutor(max_workers=60) as pool:
            responses = list(pool.map(lambda d: client.post("/api/submissions", json=d), posts))
        assert all(r.status_code in (200, 202) for r in responses), {r.status_code for r in responses}
        assert sum(r.status_code == 202 for r in responses) == 100
        ids = {r.json()["id"] for r in responses}
        assert ids == {content_hash(d) for d in docs}
        board = wait_idle(client.get)
        assert len(board["overall"]) == 100 and all(o["verified"] for o in board["overall"])
    with app.state.db.tx() as tx:
        assert tx.one("SELECT COUNT(*) AS n FROM submissions")["n"] == 100
        assert tx.one("SELECT COUNT(DISTINCT id) AS n FROM submissions")["n"] == 100
        assert tx.one("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'submission.create'")["n"] == 100
        assert tx.one("SELECT COUNT(*) AS n FROM scoring_jobs WHERE status = 'done'")["n"] == 100


def test_dir_submission_and_static_build(tmp_path, make_results, make_submission, tiny_env, verifier):
    from rlhf_gym.leaderboard.cli import build_site

    results = tmp_path / "results.json"
    results.write_text(json.dumps(make_results()))
    lb = tmp_path / "leaderboards"
    assert main(["submit", str(results), "--dir", str(lb), "--name", "filed"]) == 0
    assert main(["submit", str(results), "--dir", str(lb), "--name", "filed"]) == 0  # idempotent
    files = list(lb.glob("*.json"))
    assert len(files) == 1 and files[0].stem == content_hash(json.loads(files[0].read_text()))

    tampered = make_submission(name="tampered filed")
    tampered["results"]["envs"][tiny_env]["metrics"]["bleu"] += 5
    (lb / f"{content_hash(tampered)}.json").write_text(json.dumps(tampered))
    info = build_site(lb, tmp_path / "site", verifier=verifier)
    assert info["submissions"] == 2
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    lines = md.splitlines()
    assert any("| filed |" in line and line.endswith("| ✓ |") for line in lines)
    assert any("| tampered filed |" in line and line.endswith("| ✗ |") for line in lines)
    index = (tmp_path / "site" / "index.html").read_text()
    assert 'href="static/style.css"' in index and "<svg" in index
    assert len(list((tmp_path / "site" / "submissions").glob("*.html"))) == 2

    # A file edited after filing no longer matches its name: the build refuses it.
    first = files[0]
    edited = json.loads(first.read_text())
    edited["meta"]["name"] = "renamed"
    first.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="does not match its content hash"):
        build_site(lb, tmp_path / "site2", verifier=verifier)
