"""Shared fixtures: a tiny JSONL-registered task scored by the core's real scorer, and
helpers to build results/submissions the way ``rlhf-gym bench`` writes them."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import time

import pytest

TINY = [
    ("t0", "Translate into English: 初めに神は天と地とを創造された。", "In the beginning God created the heavens and the earth."),
    ("t1", "Translate into English: 神は光を見て、良しとされた。", "God saw the light, and saw that it was good."),
    ("t2", "Translate into English: 夕となり、また朝となった。", "There was evening and there was morning, the first day."),
    ("t3", "Translate into English: 神はその光を昼と名づけ、", "God called the light Day, and the darkness he called Night."),
    ("t4", "Translate into English: 水の間におおぞらがあって、", "Let there be an expanse in the middle of the waters."),
    ("t5", "Translate into English: 地は形なく、むなしく、", "The earth was formless and empty."),
]
GOOD = {"t0": "In the beginning God made the heaven and the earth.", "t1": "God saw that the light was good.",
        "t2": "It was evening and it was morning, day one.", "t3": "God named the light Day and the dark Night.",
        "t4": "Let there be a firmament amid the waters.", "t5": "The earth was without form and void."}
BAD = {k: "I do not know." for k in GOOD}


# Two more tiny tasks, so a "full suite" (one env per task kind) scores in milliseconds.
TINY_SUM = [
    ("s0", "Summarize: The committee met on Monday and approved the new budget after a long debate.",
     "The committee approved the new budget."),
    ("s1", "Summarize: Heavy rain flooded several streets downtown, and the city closed two bridges.",
     "Rain flooded streets and closed two bridges."),
    ("s2", "Summarize: The team released version two of the library, which is faster and uses less memory.",
     "Version two of the library is faster and leaner."),
    ("s3", "Summarize: Researchers found that the new vaccine protects older adults as well as younger ones.",
     "The vaccine protects older adults too."),
]
TINY_DLG = [
    ("d0", "User: Do you like hiking?\nAssistant:", "Yes, I love walking in the mountains on weekends."),
    ("d1", "User: What did you have for dinner?\nAssistant:", "I made pasta with tomatoes and basil."),
    ("d2", "User: Any plans for the holidays?\nAssistant:", "I am visiting my family by the sea."),
    ("d3", "User: Have you read a good book lately?\nAssistant:", "Yes, a novel about a lighthouse keeper."),
]
SUITE = {"translation": ("LbSuiteTr", TINY), "summarization": ("LbSuiteSum", TINY_SUM),
         "dialogue": ("LbSuiteDlg", TINY_DLG)}


def write_jsonl(path, rows) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for ex_id, prompt, ref in rows:
            fh.write(json.dumps({"id": ex_id, "prompt": prompt, "references": [ref], "split": "test"},
                                ensure_ascii=False) + "\n")


@pytest.fixture(scope="session")
def tiny_suite(evaluation, tmp_path_factory) -> dict:
    """Three tiny tasks, one per kind (chrF reward, ROUGE-L judge), registered here and listed in
    ``tasks_json`` for a server started in another process (``run_with_tasks.py``)."""
    from rlhf_gym.rewards.base import MetricReward
    from rlhf_gym.tasks import register_jsonl_task

    root = tmp_path_factory.mktemp("suite")
    spec, envs = [], {}
    for kind, (name, rows) in SUITE.items():
        path = root / f"{name}.jsonl"
        write_jsonl(path, rows)
        task = register_jsonl_task(name, path, kind=kind, reward=lambda: MetricReward("chrf"),
                                   judge=lambda: MetricReward("rougeL"))
        envs[kind] = task.env_id
        spec.append({"name": name, "path": str(path), "kind": kind})
    (root / "tasks.json").write_text(json.dumps(spec))
    return {"envs": envs, "tasks_json": str(root / "tasks.json"), "rows": {k: v[1] for k, v in SUITE.items()}}


@pytest.fixture(scope="session")
def make_suite_submission(evaluation, tiny_suite):
    """A submission covering the three tiny tasks; ``variant`` k changes k's predictions (every
    distinct variant is a distinct document with distinct generations); scored by the real scorer
    as `bench` would."""
    from rlhf_gym.leaderboard.validate import build_submission

    blocks: dict = {}

    def block(env_id: str, preds: dict) -> dict:
        key = (env_id, json.dumps(preds, sort_keys=True))
        if key not in blocks:
            blocks[key] = evaluation.score_predictions(env_id, [{"id": k, "prediction": v} for k, v in preds.items()])
        return copy.deepcopy(blocks[key])

    def make(name: str, variant: int = 0) -> dict:
        envs = {}
        for kind, env_id in tiny_suite["envs"].items():
            rows = tiny_suite["rows"][kind]
            # A lead-like system: the prompt's first words, plus the variant's own ending on one example.
            preds = {ex_id: " ".join(prompt.replace("User:", "").split()[1:9]) for ex_id, prompt, _ in rows}
            first = rows[variant % len(rows)][0]
            preds[first] = f"{rows[variant % len(rows)][2]} (variant {variant})"
            envs[env_id] = block(env_id, preds)
        results = {"schema_version": evaluation.RESULTS_SCHEMA_VERSION, "rlhf_gym_version": "test",
                   "created": "2026-11-25T03:00:00Z", "agent": {"spec": name, "name": name}, "vs_agent": None,
                   "packages": {}, "envs": envs}
        return build_submission(results, name=name)

    return make


@pytest.fixture(scope="session")
def bad_predictions() -> dict[str, str]:
    return dict(BAD)


@pytest.fixture(scope="session")
def evaluation():
    return pytest.importorskip("rlhf_gym.evaluation", reason="core scorer rlhf_gym.evaluation not installed")


@pytest.fixture(scope="session")
def tiny_env(evaluation, tmp_path_factory) -> str:
    from rlhf_gym.rewards.base import MetricReward
    from rlhf_gym.tasks import register_jsonl_task

    path = tmp_path_factory.mktemp("data") / "lb_tiny.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for ex_id, prompt, ref in TINY:
            fh.write(json.dumps({"id": ex_id, "prompt": prompt, "references": [ref], "split": "test"},
                                ensure_ascii=False) + "\n")
    # Metric-based reward and judge (real core models, no encoder to load) keep a recompute
    # to milliseconds, so a hundred of them fit in a fast test.
    task = register_jsonl_task("LbTiny", path, kind="translation", reward=lambda: MetricReward("chrf"),
                               judge=lambda: MetricReward("rougeL"))
    assert task.env_id in evaluation.list_env_ids()
    return task.env_id


@pytest.fixture(scope="session")
def make_results(evaluation, tiny_env):
    """Results JSON for the tiny env, scored by the real scorer (as `bench` would)."""
    cache: dict = {}

    def make(predictions: dict[str, str] | None = None, agent: str = "lead") -> dict:
        predictions = predictions or GOOD
        key = (json.dumps(predictions, sort_keys=True), agent)
        if key not in cache:
            preds = [{"id": k, "prediction": v} for k, v in predictions.items()]
            block = evaluation.score_predictions(tiny_env, preds, split="test")
            cache[key] = {"schema_version": evaluation.RESULTS_SCHEMA_VERSION, "rlhf_gym_version": "test",
                          "created": "2026-11-25T03:00:00Z", "agent": {"spec": agent, "name": agent},
                          "vs_agent": None, "packages": {}, "envs": {tiny_env: block}}
        return copy.deepcopy(cache[key])

    return make


@pytest.fixture(scope="session")
def make_submission(make_results):
    from rlhf_gym.leaderboard.validate import build_submission

    def make(name: str = "lead baseline", predictions=None, **meta) -> dict:
        return build_submission(make_results(predictions), name=name, **meta)

    return make


@pytest.fixture(scope="session")
def verifier(evaluation):
    from rlhf_gym.leaderboard.service import Verifier

    return Verifier(max_parallel=4)



def _wait_status(get, sid: str, timeout: float = 60.0) -> dict:
    """Poll ``GET /api/submissions/{sid}`` (``get`` is a client's get) until it is scored or
    failed; returns that answer."""
    deadline = time.monotonic() + timeout
    while True:
        r = get(f"/api/submissions/{sid}?generations=false")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] != "pending":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"submission {sid} still pending after {timeout} s: {body}")
        time.sleep(0.05)


def _wait_idle(get, timeout: float = 120.0) -> dict:
    """Poll ``GET /api/leaderboard`` until no job is queued or being scored; returns the board."""
    deadline = time.monotonic() + timeout
    while True:
        board = get("/api/leaderboard").json()
        if board["queue"]["pending"] == 0 and board["queue"]["scoring"] == 0:
            assert board["queue"]["failed"] == 0, board["queue"]
            return board
        if time.monotonic() > deadline:
            raise AssertionError(f"queue not drained after {timeout} s: {board['queue']}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def wait_status():
    return _wait_status


@pytest.fixture(scope="session")
def wait_idle():
    return _wait_idle


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server started for this test run (Debian's postgresql package), or a
    skip that says why it cannot start here."""
    from rlhf_gym.leaderboard.pgserver import PostgresServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL backend not tested: {reason}")
    try:
        server = PostgresServer().start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"PostgreSQL backend not tested: the server did not start: {err}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    """A fresh empty leaderboard database on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "lb.db")
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture(scope="session")
def open_client():
    """``open_client(db_url, verifier, user, rate_limit)``: a context manager giving a TestClient on
    a fresh app, with ``user``'s bearer token set and ``client.app_db`` its database."""

    @contextlib.contextmanager
    def open_(db_url, verifier, user: str, rate_limit: str):
        from fastapi.testclient import TestClient

        from rlhf_gym.leaderboard.app import create_app

        app = create_app(db_url, verifier=verifier, max_body_mb=1, rate_limit=rate_limit, poll_s=0.2)
        token = app.state.db.add_user(user)
        with TestClient(app) as c:
            c.headers["Authorization"] = f"Bearer {token}"
            c.app_db = app.state.db
            yield c

    return open_
