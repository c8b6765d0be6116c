"""``rlhf-gym serve-env``: one env id served over HTTP and WebSocket, one env instance per session.

Every session holds its own ``gymnasium.make(env_id, **env_kwargs)`` env -- the very object a
user would make in process -- so a session's prompts (for a seed), rewards and info are the
in-process ones. Sessions are isolated in state (own env, own RNG); env calls run one at a time
under one lock, because the reward model behind them is shared, CPU-bound and must stay
bit-deterministic.

Routes (OpenEnv's shapes; the mapping is in docs/serving.md):

- ``POST /reset`` ``{"seed"?, "options"?, "episode_id"?, "session_id"?}``: without a session id it
  opens a new session (503 when ``max_sessions`` are open); returns the result and ``session_id``.
- ``POST /step`` ``{"action": {"response": str}, "session_id": str}``.
- ``GET /state?session_id=...``, ``DELETE /sessions/{id}``, ``GET /sessions`` (counts only).
- ``GET /health``, ``GET /metadata``, ``GET /schema``.
- ``WS /ws``: one connection is one session; messages ``{"type": "reset"|"step"|"state"|"close",
  "data": ...}`` answered with ``{"type": "observation"|"state"|"error", "data": ...}``.

Errors are ``{"detail": message, "code": CODE, "error_type"?: ...}`` with a 4xx status for what
the client got wrong: 422 bad action or reset option, 409 step before reset or after the episode
ended, 404 unknown or expired session, 503 at capacity (with ``Retry-After``).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations, which name classes
# local to create_app.

import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from rlhf_gym.remote import protocol
from rlhf_gym.remote.protocol import (CAPACITY_REACHED, EXECUTION_ERROR, INVALID_JSON, SESSION_ERROR, UNKNOWN_TYPE,
                                      VALIDATION_ERROR)

SERVER_EXTRA_HINT = "install the server extra: pip install 'rlhf-gym[server]'"


class ServeError(Exception):
    """A request the server refuses: HTTP status, protocol error code and a message for the user."""

    def __init__(self, status: int, code: str, message: str, error_type: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.error_type, self.headers = error_type, headers or {}

    def body(self) -> dict[str, Any]:
        out = {"detail": self.message, "code": self.code}
        if self.error_type:
            out["error_type"] = self.error_type
        return out


@dataclass
class Session:
    id: str
    env: Any
    transport: str  # "http" sessions expire when idle; a "ws" session lives as long as its socket
    last_used: float
    step_count: int = 0
    episode_id: str | None = None
    started: bool = False
    done: bool = False
    observation: str | None = None
    example_id: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class EnvService:
    """The sessions of one env id, and reset/step/state on them (shared by HTTP and WebSocket)."""

    def __init__(self, env_id: str, *, max_sessions: int = 64, session_timeout_s: float = 600.0,
                 clock=time.monotonic, **env_kwargs: Any):
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if session_timeout_s <= 0:
            raise ValueError(f"session_timeout_s must be > 0, got {session_timeout_s}")
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs)
        self.max_sessions, self.session_timeout_s, self._clock = int(max_sessions), float(session_timeout_s), clock
        self._sessions: dict[str, Session | None] = {}  # None: a slot reserved while its env is built
        self._pool_lock = threading.Lock()
        self._compute_lock = threading.Lock()
        import gymnasium

        import rlhf_gym  # noqa: F401  (registers the ids)

        if env_id not in gymnasium.envs.registration.registry:
            known = sorted(k for k in gymnasium.envs.registration.registry if k.startswith("rlhf_gym/"))
            raise ValueError(f"unknown env id {env_id!r}; known: {', '.join(known)}")
        # Build one env now: a bad id or kwarg fails at start-up, and data and reward model are
        # loaded (and cached) before the first client waits on them.
        probe = self._make_env()
        try:
            from gymnasium import spaces

            if not isinstance(probe.action_space, spaces.Text):
                raise ValueError(f"serve-env serves envs whose action is text; {env_id} has action space "
                                 f"{probe.action_space} (token-level ids are not served)")
            self.max_response_chars = int(probe.action_space.max_length)
            self.max_prompt_chars = int(probe.observation_space.max_length)
            task = probe.unwrapped.task
            self.description, self.version, self.kind = task.description, task.version, task.kind
            self.split, self.n_examples = probe.unwrapped.split, len(probe.unwrapped.examples)
            self.reward_name = getattr(probe.unwrapped.reward_fn.reward_model, "name", None)
        finally:
            probe.close()

    def _make_env(self):
        import gymnasium

        with self._compute_lock:
            return gymnasium.make(self.env_id, render_mode="ansi", **self.env_kwargs)

    # -- sessions ------------------------------------------------------------------------

    def _reap_locked(self) -> None:
        now = self._clock()
        expired = [sid for sid, s in self._sessions.items()
                   if s is not None and s.transport == "http" and now - s.last_used > self.session_timeout_s]
        for sid in expired:
            self._sessions.pop(sid).env.close()

    @property
    def active_sessions(self) -> int:
        with self._pool_lock:
            self._reap_locked()
            return len(self._sessions)

    def open(self, transport: str = "http") -> Session:
        with self._pool_lock:
            self._reap_locked()
            if len(self._sessions) >= self.max_sessions:
                raise ServeError(503, CAPACITY_REACHED,
                                 f"server at capacity: {len(self._sessions)} of {self.max_sessions} sessions open "
                                 "(--max-sessions); close one (DELETE /sessions/ID, or close the WebSocket) or retry "
                                 f"later (idle HTTP sessions expire after {self.session_timeout_s:g} s)",
                                 headers={"Retry-After": "1"})
            sid = uuid.uuid4().hex
            self._sessions[sid] = None
        try:
            env = self._make_env()
        except BaseException:
            with self._pool_lock:
                self._sessions.pop(sid, None)
            raise
        session = Session(sid, env, transport, self._clock())
        with self._pool_lock:
            self._sessions[sid] = session
        return session

    def get(self, session_id: str | None) -> Session:
        if not session_id:
            raise ServeError(422, VALIDATION_ERROR, "session_id is required: POST /reset without one opens a session "
                                                    "and returns its session_id")
        with self._pool_lock:
            self._reap_locked()
            session = self._sessions.get(session_id)
        if session is None:
            raise ServeError(404, SESSION_ERROR,
                             f"unknown session_id {session_id!r}: it was closed, expired after "
                             f"{self.session_timeout_s:g} s idle, or never existed; POST /reset without a "
                             "session_id opens a new one")
        return session

    def close(self, session_id: str) -> None:
        with self._pool_lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise ServeError(404, SESSION_ERROR, f"unknown session_id {session_id!r}")
        with session.lock:
            session.env.close()

    def close_all(self) -> None:
        with self._pool_lock:
            sessions = [s for s in self._sessions.values() if s is not None]
            self._sessions.clear()
        for session in sessions:
            session.env.close()

    # -- env calls -----------------------------------------------------------------------

    def reset(self, session: Session, seed: int | None = None, options: dict | None = None,
              episode_id: str | None = None) -> dict[str, Any]:
        with session.lock:
            session.last_used = self._clock()
            try:
                with self._compute_lock:
                    obs, info = session.env.reset(seed=seed, options=options)
            except (TypeError, ValueError) as err:  # an unknown example_id, an index out of range...
                raise ServeError(422, VALIDATION_ERROR, f"bad reset: {err}", type(err).__name__) from None
            session.episode_id = episode_id or uuid.uuid4().hex
            session.step_count, session.started, session.done = 0, True, False
            session.observation, session.example_id = obs, info.get("example_id")
            return protocol.result_payload(obs, None, False, False, info)

    def step(self, session: Session, action: Any) -> dict[str, Any]:
        from rlhf_gym.envs.text_env import check_response

        with session.lock:
            session.last_used = self._clock()
            if not session.started:
                raise ServeError(409, VALIDATION_ERROR, "call reset before step")
            if session.done:
                raise ServeError(409, VALIDATION_ERROR, "the episode is over (done=true): reset before stepping again")
            try:
                # The env's own rule (type, length limit), checked before the env is touched so a
                # bad action never costs a reward-model call or changes the episode.
                response = check_response(protocol.parse_action(action), self.max_response_chars)
            except (TypeError, ValueError) as err:
                raise ServeError(422, VALIDATION_ERROR, f"bad action: {err}", type(err).__name__) from None
            try:
                with self._compute_lock:
                    obs, reward, terminated, truncated, info = session.env.step(response)
            except Exception as err:
                raise ServeError(500, EXECUTION_ERROR, f"env step failed: {type(err).__name__}: {err}") from err
            session.step_count += 1
            session.done = bool(terminated or truncated)
            session.observation = obs
            return protocol.result_payload(obs, reward, terminated, truncated, info)

    def state(self, session: Session) -> dict[str, Any]:
        with session.lock:
            session.last_used = self._clock()
            transcript = session.env.render() if session.started else None
            return {"episode_id": session.episode_id, "step_count": session.step_count, "session_id": session.id,
                    "env_id": self.env_id, "done": session.done, "example_id": session.example_id,
                    "observation": session.observation, "transcript": transcript}

    def metadata(self) -> dict[str, Any]:
        return {"name": self.env_id, "env_id": self.env_id, "description": self.description,
                "version": str(self.version), "kind": self.kind, "protocol": protocol.PROTOCOL_VERSION, "split": self.split,
                "n_examples": self.n_examples, "max_response_chars": self.max_response_chars,
                "max_prompt_chars": self.max_prompt_chars, "reward": self.reward_name,
                "env_kwargs": {k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
                               for k, v in self.env_kwargs.items()},
                "max_sessions": self.max_sessions, "session_timeout_s": self.session_timeout_s}


def create_app(env_id: str, *, max_sessions: int = 64, session_timeout_s: float = 600.0, **env_kwargs: Any):
    """The FastAPI app serving ``env_id`` (``env_kwargs`` go to ``gymnasium.make``)."""
    try:
        from fastapi import Body, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
        from fastapi.responses import JSONResponse
        from pydantic import BaseModel, ConfigDict, Field, ValidationError
        from starlette.concurrency import run_in_threadpool
    except ImportError as err:
        raise ImportError(f"serve-env needs fastapi; {SERVER_EXTRA_HINT}") from err

    service = EnvService(env_id, max_sessions=max_sessions, session_timeout_s=session_timeout_s, **env_kwargs)

    class ExactJSONResponse(JSONResponse):
        def render(self, content: Any) -> bytes:
            return protocol.dumps(content).encode("utf-8")

    class ResetData(BaseModel):  # a WebSocket reset's data
        model_config = ConfigDict(extra="forbid")
        seed: int | None = Field(default=None, ge=0)
        options: dict[str, Any] | None = None
        episode_id: str | None = Field(default=None, max_length=255)

    class ResetRequest(ResetData):  # an HTTP reset names its session
        session_id: str | None = None

    class StepRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        action: Any
        session_id: str | None = None
        timeout_s: float | None = None  # OpenEnv fields, accepted and unused: a step is one reward call
        request_id: str | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close_all()

    app = FastAPI(title=f"rlhf-gym {env_id}", default_response_class=ExactJSONResponse, lifespan=lifespan,
                  description="An rlhf-gym environment served with OpenEnv-style reset/step/state.")
    app.state.service = service

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, err: ServeError):
        return ExactJSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.get("/health")
    def health() -> dict:
        return {"status": "healthy"}

    @app.get("/metadata")
    def metadata() -> dict:
        return service.metadata()

    @app.get("/schema")
    def schema() -> dict:
        return {"action": protocol.action_schema(service.max_response_chars),
                "observation": protocol.observation_schema(service.max_prompt_chars),
                "state": protocol.STATE_SCHEMA}

    @app.get("/sessions")
    def sessions() -> dict:
        return {"active": service.active_sessions, "max_sessions": service.max_sessions,
                "session_timeout_s": service.session_timeout_s}

    @app.post("/reset")
    def reset(request: ResetRequest = Body(default_factory=ResetRequest)) -> dict:
        opened = request.session_id is None
        session = service.open("http") if opened else service.get(request.session_id)
        try:
            payload = service.reset(session, request.seed, request.options, request.episode_id)
        except Exception:
            if opened:  # a session whose first reset failed is of no use to anyone
                service.close(session.id)
            raise
        return {**payload, "session_id": session.id}

    @app.post("/step")
    def step(request: StepRequest) -> dict:
        session = service.get(request.session_id)
        return {**service.step(session, request.action), "session_id": session.id}

    @app.get("/state")
    def state(session_id: str | None = Query(default=None)) -> dict:
        return service.state(service.get(session_id))

    @app.delete("/sessions/{session_id}")
    def close_session(session_id: str) -> dict:
        service.close(session_id)
        return {"session_id": session_id, "closed": True}

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()

        async def send_error(err: ServeError) -> None:
            await ws.send_text(protocol.dumps({"type": "error", "data": {"message": err.message, "code": err.code,
                                                                       "status": err.status,
                                                                       **({"error_type": err.error_type}
                                                                          if err.error_type else {})}}))
        try:
            session = await run_in_threadpool(service.open, "ws")
        except ServeError as err:
            await send_error(err)
            await ws.close(code=1013)  # "try again later"
            return
        try:
            while True:
                raw = await ws.receive_text()
                try:
                    message = json.loads(raw)
                except json.JSONDecodeError as err:
                    await send_error(ServeError(400, INVALID_JSON, f"invalid JSON: {err}"))
                    continue
                kind = message.get("type") if isinstance(message, dict) else None
                data = message.get("data") if isinstance(message, dict) else None
                try:
                    if kind == "reset":
                        try:
                            request = ResetData.model_validate(data or {})
                        except ValidationError as err:
                            raise ServeError(422, VALIDATION_ERROR, f"bad reset data: {err}") from None
                        payload = await run_in_threadpool(service.reset, session, request.seed, request.options,
                                                          request.episode_id)
                        reply = {"type": "observation", "data": payload}
                    elif kind == "step":
                        payload = await run_in_threadpool(service.step, session, data)
                        reply = {"type": "observation", "data": payload}
                    elif kind == "state":
                        reply = {"type": "state", "data": await run_in_threadpool(service.state, session)}
                    elif kind == "close":
                        break
                    else:
                        raise ServeError(400, UNKNOWN_TYPE, f"unknown message type {kind!r}; expected reset, step, "
                                                            "state or close")
                except ServeError as err:
                    await send_error(err)
                    continue
                await ws.send_text(protocol.dumps(reply))
            await ws.close()
        except WebSocketDisconnect:
            pass
        finally:
            try:
                service.close(session.id)
            except ServeError:
                pass

    return app


def register(subparsers) -> None:
    p = subparsers.add_parser("serve-env", help="serve an env over HTTP and WebSocket (OpenEnv-style reset/step/state)")
    p.add_argument("--env", required=True, help="env id with text actions, e.g. rlhf_gym/Dialogue-v1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-sessions", type=int, default=64, help="concurrent sessions; more get 503 (default 64)")
    p.add_argument("--session-timeout", type=float, default=600.0,
                   help="seconds after which an idle HTTP session is closed (default 600)")
    p.add_argument("--split", default="train", help="the split episodes draw from (default: train, as gymnasium.make)")
    p.add_argument("--reward", default=None, help="reward spec replacing the env's default (as bench --reward)")
    p.add_argument("--safety-coef", type=float, default=0.0, help="the env's safety penalty coefficient")
    p.set_defaults(handler=cmd_serve_env)


def cmd_serve_env(args) -> int:
    import importlib.util
    import sys

    try:
        import uvicorn
    except ImportError as err:
        raise ImportError(f"serve-env needs uvicorn; {SERVER_EXTRA_HINT}") from err
    env_kwargs: dict[str, Any] = {"split": args.split}
    if args.reward:
        env_kwargs["reward_model"] = args.reward
    if args.safety_coef:
        env_kwargs["safety_coef"] = args.safety_coef
    print(f"loading {args.env} ...", file=sys.stderr)
    app = create_app(args.env, max_sessions=args.max_sessions, session_timeout_s=args.session_timeout, **env_kwargs)
    if not any(importlib.util.find_spec(m) for m in ("websockets", "wsproto")):
        print("warning: neither websockets nor wsproto is installed: /ws is unavailable (HTTP works); "
              "pip install websockets", file=sys.stderr)
    print(f"serving {args.env} at http://{args.host}:{args.port} (max {args.max_sessions} sessions; "
          f"docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
