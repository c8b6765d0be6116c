"""HTTP API through FastAPI's TestClient, with the core's real scorer recomputing metrics in the
app's scoring worker, on SQLite and on a real PostgreSQL server (skipped with the reason where
one cannot start)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason="needs the server extra: pip install 'rlhf-gym[server]'")
from fastapi.testclient import TestClient  # noqa: E402

from rlhf_gym.leaderboard.app import create_app  # noqa: E402


@pytest.fixture
def client(db_url, verifier, open_client):
    with open_client(db_url, verifier, "alice", "20/min") as c:
        yield c


@pytest.fixture
def post_scored(client, wait_status):
    def post(doc) -> dict:
        """POST, check the 202, and wait for the worker's verdict."""
        r = client.post("/api/submissions", json=doc)
        assert r.status_code == 202, r.text
        return wait_status(client.get, r.json()["id"])

    return post


def count(db, table: str) -> int:
    with db.tx() as tx:
        return tx.one(f"SELECT COUNT(*) AS n FROM {table}")["n"]


def test_valid_submission_is_queued_then_recomputed_and_verified(client, make_submission, tiny_env, wait_status):
    doc = make_submission()
    r = client.post("/api/submissions", json=doc)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["created"] and body["status"] == "pending" and body["verified"] is None
    assert body["status_url"] == f"/api/submissions/{body['id']}" == r.headers["location"]
    done = wait_status(client.get, body["id"])
    assert done["status"] == "verified" and done["verified"] is True and done["envs"][tiny_env]["verified"]
    assert "generations" not in done["envs"][tiny_env]  # ?generations=false, for polling
    sub = client.get(f"/api/submissions/{body['id']}").json()
    e = sub["envs"][tiny_env]
    assert e["metrics"]["bleu"] == pytest.approx(doc["results"]["envs"][tiny_env]["metrics"]["bleu"])
    assert all(row["status"] == "match" for row in e["comparison"].values())
    # References shown on the detail page come from the server's data, not the submission.
    assert e["generations"][0]["references"] == ["In the beginning God created the heavens and the earth."]
    board = client.get("/api/leaderboard").json()
    assert [r["id"] for r in board["overall"]] == [body["id"]] and board["envs"][tiny_env][0]["verified"]
    assert board["queue"] == {"pending": 0, "scoring": 0, "failed": 0}
    page = client.get(f"/submissions/{body['id']}").text
    assert "In the beginning God made the heaven and the earth." in page and "✓ verified" in page


def test_identical_resubmission_is_idempotent(client, make_submission, wait_status):
    doc = make_submission()
    first = client.post("/api/submissions", json=doc)
    # Same content, other key order and whitespace: same canonical JSON, same id.
    again = client.post("/api/submissions", content=json.dumps(doc, indent=3, sort_keys=True),
                        headers={"Content-Type": "application/json"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
    done = wait_status(client.get, first.json()["id"])
    assert done["status"] == "verified", done
    third = client.post("/api/submissions", json=doc)  # after scoring: the stored verdict
    assert third.status_code == 200 and third.json()["status"] == "verified" and third.json()["verified"] is True
    assert count(client.app_db, "submissions") == 1 and count(client.app_db, "scoring_jobs") == 1
    actions = [a["action"] for a in client.app_db.audit_rows()]
    assert actions.count("submission.accept") == 1 and actions.count("submission.create") == 1
    assert actions.count("submission.resubmit") == 2


def test_tampered_bleu_is_flagged_and_both_values_stored(client, make_submission, tiny_env, post_scored):
    doc = make_submission(name="tampered")
    true_bleu = doc["results"]["envs"][tiny_env]["metrics"]["bleu"]
    doc["results"]["envs"][tiny_env]["metrics"]["bleu"] = true_bleu + 10
    body = post_scored(doc)
    assert body["status"] == "mismatch" and body["verified"] is False
    again = client.post("/api/submissions", json=doc).json()  # the verdict, as a resubmission reports it
    assert again["mismatches"][tiny_env] == {"bleu": {"submitted": true_bleu + 10, "recomputed": pytest.approx(true_bleu),
                                                      "status": "mismatch"}}
    board = client.get("/api/leaderboard").json()["envs"][tiny_env][0]
    assert board["bleu"] == pytest.approx(true_bleu) and board["verified"] is False  # the recomputed number is shown
    html = client.get("/").text
    assert "tampered" in html and "✗" in html


def test_tampered_prompt_does_not_reach_the_page(client, make_submission, tiny_env, post_scored):
    doc = make_submission(name="prompt edit")
    doc["results"]["envs"][tiny_env]["generations"][0]["references"] = ["<b>fake reference</b>"]
    sid = post_scored(doc)["id"]
    assert "fake reference" not in client.get(f"/submissions/{sid}").text


def test_auth_errors(client, make_submission):
    doc = make_submission()
    assert client.post("/api/submissions", json=doc, headers={"Authorization": ""}).status_code == 401
    r = client.post("/api/submissions", json=doc, headers={"Authorization": "Bearer rlg_wrong"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid token"
    assert r.headers["www-authenticate"] == "Bearer"
    assert count(client.app_db, "submissions") == 0


def test_body_over_limit_is_413_by_header_and_by_stream(client):
    big = b"[" + b"0," * 600_000 + b"0]"  # ~1.2 MB, limit is 1 MiB
    assert client.post("/api/submissions", content=big).status_code == 413

    def chunks():  # no Content-Length: chunked upload, counted while streaming
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = client.post("/api/submissions", content=chunks())
    assert r.status_code == 413 and "larger than 1048576 bytes" in r.json()["detail"]


@pytest.mark.parametrize("edit, status, field, message", [
    (lambda d, env: b"{not json", 422, "$", "body is not valid JSON"),
    (lambda d, env: d["meta"].pop("name"), 422, "meta.name", "required field is missing"),
    (lambda d, env: d["results"]["envs"][env]["generations"].pop(), 422, "generations", "missing"),
    (lambda d, env: d["results"]["envs"][env]["generations"].append({"id": "zz", "prediction": "x"}), 422,
     "generations", "zz"),
    (lambda d, env: d["results"]["envs"][env]["generations"].append(
        dict(d["results"]["envs"][env]["generations"][0])), 422, "generations[6].id", "duplicate example id 't0'"),
    (lambda d, env: d["results"]["envs"].update({"rlhf_gym/LbTiny-v7": {**d["results"]["envs"][env],
                                                                       "env_id": "rlhf_gym/LbTiny-v7"}}),
     422, "rlhf_gym/LbTiny-v7", "unknown version of rlhf_gym/LbTiny"),
    (lambda d, env: d["results"]["envs"].update({"acme/Nope-v0": {**d["results"]["envs"][env], "env_id": "acme/Nope-v0"}}),
     422, "acme/Nope-v0", "unknown env id"),
    # NaN in a metric (Python's json writes and reads it; standard JSON has none): a 422, not a 500
    (lambda d, env: d["results"]["envs"][env]["metrics"].update(bleu=float("nan")), 422,
     "metrics.bleu", "must be a finite number, got nan"),
    # over the env's action limit: refused when posted, by the rule env, bench and score apply
    (lambda d, env: d["results"]["envs"][env]["generations"][2].update(prediction="x" * 5000), 422,
     "generations", "1 of 6 responses are not valid actions of this env"),
])
def test_bad_submissions_are_422_naming_the_problem(client, make_submission, tiny_env, edit, status, field, message,
                                                    wait_status):
    ok = client.post("/api/submissions", json=make_submission(name="kept"))
    wait_status(client.get, ok.json()["id"])
    doc = make_submission(name="bad")
    out = edit(doc, tiny_env)
    body = out if isinstance(out, bytes) else json.dumps(doc)  # bytes: a raw body
    r = client.post("/api/submissions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert field in r.json()["field"] and message.lower() in r.json()["detail"].lower(), r.json()
    # Rejected when posted, never queued; nothing already accepted is lost; the rejection is audited.
    assert count(client.app_db, "submissions") == 1 and count(client.app_db, "scoring_jobs") == 1
    assert client.get(f"/api/submissions/{ok.json()['id']}").status_code == 200
    if not isinstance(out, bytes):
        assert client.app_db.audit_rows()[-1]["action"] == "submission.reject"


def test_rate_limit_is_per_user_429(db_url, verifier, make_submission):
    app = create_app(db_url, verifier=verifier, rate_limit="3/min")
    alice, bob = app.state.db.add_user("alice"), app.state.db.add_user("bob")
    doc = make_submission()
    with TestClient(app) as c:
        codes = [c.post("/api/submissions", json=doc, headers={"Authorization": f"Bearer {alice}"}).status_code
                 for _ in range(4)]
        assert codes == [202, 200, 200, 429]
        r = c.post("/api/submissions", json=doc, headers={"Authorization": f"Bearer {alice}"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "alice" in r.json()["detail"]
        assert c.post("/api/submissions", json=doc, headers={"Authorization": f"Bearer {bob}"}).status_code == 200


def test_unknown_submission_is_404(client):
    assert client.get("/api/submissions/deadbeef").status_code == 404
    assert client.get("/submissions/deadbeef").status_code == 404


def test_worse_system_ranks_lower(client, make_submission, tiny_env, bad_predictions, post_scored):
    good = post_scored(make_submission(name="good"))["id"]
    bad = post_scored(make_submission(name="bad", predictions=bad_predictions))["id"]
    rows = client.get("/api/leaderboard").json()["envs"][tiny_env]
    assert [r["id"] for r in rows] == [good, bad]
    assert rows[0]["bleu"] > rows[1]["bleu"]
