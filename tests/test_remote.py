"""serve-env and RemoteEnv: a real uvicorn server in a thread, driven over HTTP and WebSocket and
compared step by step with the same env made in process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
RESPONSES = ["The number is fine.", "A fine number indeed, I would say.", "", "数字", "number number number"]


@pytest.fixture(scope="module")
def serve_task(tmp_path_factory):
    """A JSONL task with a chrF reward (a real metric: scoring takes microseconds, no encoder)."""
    from rlhf_gym.rewards.base import MetricReward
    from rlhf_gym.tasks import register_jsonl_task

    rows = [{"id": f"s{i}", "prompt": f"Say something about number {i}.",
             "references": [f"The number {i} is a fine number."], "split": "train" if i < 8 else "test"}
            for i in range(10)]
    path = tmp_path_factory.mktemp("serve") / "serve.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return register_jsonl_task("ServeTiny", path, kind="summarization", max_response_chars=60,
                               reward=lambda: MetricReward("chrf"), judge=lambda: MetricReward("rougeL"))


@pytest.fixture(scope="module")
def server(serve_task, live_server):
    from rlhf_gym.remote.server import create_app

    with live_server(create_app(serve_task.env_id, max_sessions=3)) as srv:
        yield srv


def _remote(server, task, **kw):
    from rlhf_gym.remote import RemoteEnv

    return RemoteEnv(server.url, env_id=task.env_id, **kw)


def test_remote_env_matches_in_process_step_by_step(server, serve_task):
    remote = _remote(server, serve_task)
    local = gym.make(serve_task.env_id)
    assert remote.action_space.max_length == local.action_space.max_length == 60
    assert remote.observation_space.max_length == local.observation_space.max_length
    # Seeded resets, then unseeded ones continuing each env's RNG stream, then named examples.
    resets = [{"seed": 3}, {}, {}, {"seed": 11}, {}, {"options": {"example_id": "s5"}}, {"options": {"index": 0}}]
    for n, kwargs in enumerate(resets):
        assert remote.reset(**kwargs) == local.reset(**kwargs)
        response = RESPONSES[n % len(RESPONSES)]
        got, want = remote.step(response), local.step(response)
        assert got == want, (kwargs, response)
        assert type(got[1]) is float and got[1] == want[1]  # the exact float, not an approximation
    # Rewards differ across responses, so equality above is not a constant coincidence.
    rewards = {remote.reset(seed=0) and remote.step(r)[1] for r in RESPONSES[:3]}
    assert len(rewards) == 3
    remote.close()


def test_check_env_on_remote_env(server, serve_task):
    from gymnasium.utils.env_checker import check_env

    env = _remote(server, serve_task, render_mode="ansi")
    check_env(env)
    env.reset(seed=1)
    env.step("hello")
    assert env.render().startswith("Say something about number")
    env.close()


def test_sessions_are_isolated(server, serve_task):
    a, b = _remote(server, serve_task), _remote(server, serve_task)
    la, lb = gym.make(serve_task.env_id), gym.make(serve_task.env_id)
    assert a.reset(seed=7) == la.reset(seed=7)
    assert b.reset(seed=8) == lb.reset(seed=8)
    # Interleaved: b's reset between a's reset and step must not change what a is answering.
    assert a.reset() == la.reset()
    assert b.reset() == lb.reset()
    assert a.step("a fine number") == la.step("a fine number")
    assert b.step("another") == lb.step("another")
    assert a.state()["session_id"] != b.state()["session_id"]
    assert a.state()["step_count"] == 1
    a.close(), b.close()


def test_bad_requests_get_clear_4xx(server, serve_task):
    import httpx

    from rlhf_gym.remote import RemoteEnvError

    env = _remote(server, serve_task)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("too early")  # no session yet: nothing was sent
    env.reset(seed=0)
    with pytest.raises(TypeError, match="must be a str"):
        env.step(5)
    with pytest.raises(ValueError, match="61 characters, over this env's limit of 60"):
        env.step("x" * 61)
    with pytest.raises(ValueError, match="bad reset: example_id 'nope'"):
        env.reset(options={"example_id": "nope"})
    local = gym.make(serve_task.env_id)
    local.reset(seed=0)
    # The bad actions and the bad reset changed nothing: the episode still answers seed 0's prompt.
    assert env.step("still answering the same prompt") == local.step("still answering the same prompt")
    with pytest.raises(RemoteEnvError, match="episode is over") as err:
        env.step("again")
    assert err.value.status == 409
    sid = env.session_id
    env.close()
    with httpx.Client(base_url=server.url) as http:
        r = http.post("/step", json={"action": {"response": "hi"}, "session_id": sid})
        assert r.status_code == 404 and r.json()["code"] == "SESSION_ERROR" and "unknown session_id" in r.json()["detail"]
        r = http.post("/step", json={"action": {"response": "hi"}})
        assert r.status_code == 422 and "session_id is required" in r.json()["detail"]
        opened = http.post("/reset", json={"seed": 0}).json()["session_id"]
        r = http.post("/step", json={"action": {"text": "hi"}, "session_id": opened})
        assert r.status_code == 422 and "response" in r.json()["detail"]
        r = http.post("/step", json={"action": "hi", "session_id": opened})
        assert r.status_code == 422 and r.json()["error_type"] == "TypeError"
        r = http.post("/reset", json={"seed": -1})
        assert r.status_code == 422
        r = http.post("/reset", json={"sed": 1})  # a typo is an error, not silently ignored
        assert r.status_code == 422
        assert http.delete(f"/sessions/{opened}").json() == {"session_id": opened, "closed": True}
        assert http.get("/sessions").json()["active"] == 0


def test_session_cap_gives_503_until_one_closes(server, serve_task):
    import httpx

    envs = [_remote(server, serve_task) for _ in range(3)]
    for env in envs:
        env.reset(seed=0)
    with httpx.Client(base_url=server.url) as http:
        r = http.post("/reset", json={})
        assert r.status_code == 503 and r.json()["code"] == "CAPACITY_REACHED"
        assert "3 of 3 sessions" in r.json()["detail"] and r.headers["retry-after"] == "1"
        envs[0].close()
        r = http.post("/reset", json={"seed": 1})
        assert r.status_code == 200
        http.delete(f"/sessions/{r.json()['session_id']}")
    for env in envs[1:]:
        env.close()


def test_idle_http_sessions_expire(serve_task):
    from rlhf_gym.remote.server import EnvService, ServeError

    now = [0.0]
    service = EnvService(serve_task.env_id, max_sessions=1, session_timeout_s=10, clock=lambda: now[0])
    idle = service.open("http")
    service.reset(idle, seed=0)
    with pytest.raises(ServeError) as err:
        service.open("http")
    assert err.value.status == 503
    now[0] = 11.0  # idle for longer than the timeout: its slot is free again
    fresh = service.open("http")
    with pytest.raises(ServeError) as err:
        service.get(idle.id)
    assert err.value.status == 404 and "expired after 10 s idle" in err.value.message
    assert service.get(fresh.id) is fresh


def test_websocket_follows_openenv_messages(server, serve_task):
    ws_client = pytest.importorskip("websockets.sync.client")
    local = gym.make(serve_task.env_id)
    with ws_client.connect(server.url.replace("http", "ws") + "/ws") as ws:
        def call(message):
            ws.send(json.dumps(message))
            return json.loads(ws.recv())

        reply = call({"type": "step", "data": {"response": "early"}})
        assert reply["type"] == "error" and reply["data"]["status"] == 409
        obs, info = local.reset(seed=4)
        reply = call({"type": "reset", "data": {"seed": 4}})
        assert reply == {"type": "observation", "data": {
            "observation": {"text": obs, "terminated": False, "truncated": False}, "reward": None, "done": False,
            "metadata": info}}
        reply = call({"type": "step", "data": {"response": 7}})
        assert reply["type"] == "error" and reply["data"]["code"] == "VALIDATION_ERROR" and reply["data"]["status"] == 422
        obs, reward, terminated, _, info = local.step("a fine number")
        reply = call({"type": "step", "data": {"response": "a fine number"}})
        assert reply["data"]["reward"] == reward and reply["data"]["done"] is terminated is True
        assert reply["data"]["observation"]["text"] == obs and reply["data"]["metadata"] == info
        state = call({"type": "state"})
        assert state["type"] == "state" and state["data"]["step_count"] == 1 and state["data"]["example_id"] == info["example_id"]
        reply = call({"type": "reset", "data": {"seed": -2}})
        assert reply["data"]["status"] == 422 and "bad reset data" in reply["data"]["message"]
        assert call({"type": "dance"})["data"]["code"] == "UNKNOWN_TYPE"
        ws.send("not json")
        assert json.loads(ws.recv())["data"]["code"] == "INVALID_JSON"
        ws.send(json.dumps({"type": "close"}))


def test_websocket_refused_at_capacity(server, serve_task):
    ws_client = pytest.importorskip("websockets.sync.client")
    envs = [_remote(server, serve_task) for _ in range(3)]
    for env in envs:
        env.reset(seed=0)
    with ws_client.connect(server.url.replace("http", "ws") + "/ws") as ws:
        reply = json.loads(ws.recv())
    assert reply["type"] == "error" and reply["data"]["code"] == "CAPACITY_REACHED"
    for env in envs:
        env.close()


def test_unknown_env_is_refused():
    from rlhf_gym.remote.server import EnvService

    with pytest.raises(ValueError, match="unknown env id 'rlhf_gym/Nope-v0'; known: .*rlhf_gym/Dialogue-v1"):
        EnvService("rlhf_gym/Nope-v0")


@pytest.mark.slow
def test_token_env_is_refused(serve_task):
    from rlhf_gym.remote.server import EnvService

    with pytest.raises(ValueError, match="token-level ids are not served"):
        EnvService(serve_task.token_env_id)


@pytest.mark.slow
def test_cli_serves_a_builtin_env_to_remote_env(tmp_path, free_tcp_port):
    """`rlhf-gym serve-env` in its own process on Dialogue-v1 (MiniLM proxy reward), driven by
    RemoteEnv and compared with the env made here: identical prompts, rewards and info."""
    from rlhf_gym.remote import RemoteEnv

    port = free_tcp_port
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_gym.cli", "serve-env", "--env", "rlhf_gym/Dialogue-v1",
                             "--port", str(port), "--max-sessions", "2"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        remote = None
        while remote is None:
            try:
                remote = RemoteEnv(f"http://127.0.0.1:{port}", env_id="rlhf_gym/Dialogue-v1")
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "server.log").read_text())
                time.sleep(0.5)
        local = gym.make("rlhf_gym/Dialogue-v1")
        for seed in range(4):
            assert remote.reset(seed=seed) == local.reset(seed=seed)
            for text in ("That sounds like fun, tell me more!", "ok"):
                remote.reset(seed=seed), local.reset(seed=seed)
                assert remote.step(text) == local.step(text)
        remote.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
