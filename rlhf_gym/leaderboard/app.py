"""The leaderboard web server (FastAPI, served by uvicorn).

``create_app(db_url, verifier=...)`` builds the ASGI app; tests and the CLI share it. The
handlers that touch the database are plain ``def`` (or hand their work to the thread pool), so
the event loop never waits on a query. Scoring never runs in a request: ``POST
/api/submissions`` validates and queues (202), and ``workers`` scoring threads started with the
app (see ``jobs.py``) score the queue; ``workers=0`` leaves that to ``rlhf-gym leaderboard
worker`` processes on the same database.
"""

# No "from __future__ import annotations": FastAPI must see real Request annotations
# on the handlers defined inside create_app().
import json
import threading
import time
from collections import defaultdict, deque
from contextlib import asynccontextmanager
from urllib.parse import parse_qs

from . import require
from .db import Database
from .feedback import add_label, feedback_stats, next_pair, progress
from .jobs import DEFAULT_LEASE_S, DEFAULT_POLL_S, ScoringWorker
from .render import STATIC, environment
from .service import Leaderboard, Verifier
from .validate import ScoringUnavailable, SubmissionError

COOKIE = "rlhf_gym_annotator"


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Rejects request bodies over ``max_bytes`` with 413: up front from Content-Length, and
    while streaming by counting bytes (chunked uploads have no Content-Length, and the
    header can lie)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _send_json(send, 400, {"detail": "invalid Content-Length header"})
            if int(length) > self.max_bytes:
                return await _send_json(send, 413, self._detail())
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, self._detail())

    def _detail(self) -> dict:
        return {"detail": f"request body larger than {self.max_bytes} bytes ({self.max_bytes / 2**20:g} MiB)"}


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """Sliding window per user, in process memory (one uvicorn worker: the documented
    deployment; several workers would each allow the full rate)."""

    def __init__(self, limit: int | None, window_s: float = 60.0):
        self.limit, self.window_s = limit, window_s
        self._hits: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float | None:
        """Record a hit; return seconds to wait when over the limit, else None."""
        if not self.limit:
            return None
        now = time.monotonic()
        with self._lock:
            hits = self._hits[key]
            while hits and now - hits[0] >= self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return self.window_s - (now - hits[0])
            hits.append(now)
        return None


def parse_rate(text: str | None) -> tuple[int | None, float]:
    """``"30/min"`` -> (30, 60.0); ``"0"``, ``"none"`` or None disable the limit."""
    if text is None or str(text).lower() in ("0", "none", "off", ""):
        return None, 60.0
    count, _, unit = str(text).partition("/")
    windows = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "m": 60.0,
               "h": 3600.0, "hour": 3600.0}
    if not count.strip().isdigit() or (unit or "min") not in windows:
        raise ValueError(f"rate limit must look like 30/min, 5/s or 100/hour, got {text!r}")
    return int(count), windows[unit or "min"]


def submission_body(outcome) -> dict:
    """What POST /api/submissions answers (and what the CLI reads)."""
    return {"id": outcome.id, "created": outcome.created, "status": outcome.status, "verified": outcome.verified,
            "mismatches": outcome.mismatches, "error": outcome.error, "requeued": outcome.requeued,
            "url": f"/submissions/{outcome.id}", "status_url": f"/api/submissions/{outcome.id}"}


def create_app(db_url: str, *, verifier: Verifier | None = None, max_body_mb: float = 50,
               rate_limit: str | None = "60/min", n_samples: int = 20, workers: int = 1,
               lease_s: float = DEFAULT_LEASE_S, poll_s: float = DEFAULT_POLL_S):
    fastapi = require("fastapi")
    from fastapi import HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    db = Database(db_url)
    board = Leaderboard(db, verifier or Verifier())
    limit, window = parse_rate(rate_limit)
    limiter = RateLimiter(limit, window)
    templates = environment()

    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    wake = threading.Event()
    scoring = [ScoringWorker(board, lease_s=lease_s, poll_s=poll_s, wake=wake, name=f"scoring-worker-{i}")
               for i in range(workers)]

    @asynccontextmanager
    async def lifespan(_app):
        for w in scoring:
            w.start()
        try:
            yield
        finally:
            await run_in_threadpool(lambda: [w.stop() for w in scoring])

    app = fastapi.FastAPI(title="rlhf-gym leaderboard", docs_url="/api/docs", openapi_url="/api/openapi.json",
                          lifespan=lifespan)
    app.state.db = db
    app.state.leaderboard = board
    app.state.workers = scoring
    app.state.wake = wake
    app.add_middleware(BodyLimitMiddleware, max_bytes=int(max_body_mb * 2**20))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    def page(name: str, status: int = 200, **ctx) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(**ctx), status_code=status)

    def bearer_user(request: Request) -> dict:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing bearer token (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})
        user = db.user_for_token(token.strip())
        if user is None:
            raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        return user

    @app.post("/api/submissions", status_code=202)
    async def post_submission(request: Request):
        """Validate and queue: 202 with the id and ``status_url`` (200 when identical content was
        already stored or queued); a worker scores it, and ``GET status_url`` shows ``status``
        pending -> verified | mismatch | failed."""
        user = await run_in_threadpool(bearer_user, request)
        wait = limiter.retry_after(user["name"])
        if wait is not None:
            raise HTTPException(429, f"rate limit of {limit} submissions per {window:g}s exceeded for {user['name']}",
                                headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        raw = await request.body()
        try:
            doc = await run_in_threadpool(json.loads, raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return JSONResponse({"detail": f"body is not valid JSON: {err}", "field": "$"}, status_code=422)
        try:
            outcome = await run_in_threadpool(board.accept, doc, user=user["name"], source="api")
        except SubmissionError as err:
            return JSONResponse({"detail": str(err), "field": err.field}, status_code=422)
        except ScoringUnavailable as err:
            return JSONResponse({"detail": str(err)}, status_code=503)
        queued = outcome.created or outcome.requeued
        if queued:
            wake.set()
        return JSONResponse(submission_body(outcome), status_code=202 if queued else 200,
                            headers={"Location": f"/api/submissions/{outcome.id}"})

    @app.get("/api/leaderboard")
    def get_leaderboard():
        """Per-env and overall tables of scored submissions, and ``queue``: jobs pending, being
        scored and failed."""
        return board.board()

    @app.get("/api/feedback/stats")
    def get_feedback_stats():
        """Human win rate per (env, system pair) with its 95% Wilson interval, label counts and
        inter-annotator agreement (raw and Cohen's kappa) on doubly-labelled pairs."""
        return {"stats": feedback_stats(db)}

    @app.get("/api/submissions/{sid}")
    def get_submission(sid: str, generations: bool = True):
        """``status``: pending (queued or being scored: ``scoring``), verified, mismatch or failed
        (with ``error``); ``verified`` is true/false once scored. ``generations=false`` leaves
        the per-example generations out (for polling)."""
        sub = board.submission(sid)
        if sub is None:
            raise HTTPException(404, f"no submission {sid}")
        if not generations:
            for env in sub["envs"].values():
                env.pop("generations", None)
        return sub

    @app.get("/", response_class=HTMLResponse)
    def index():
        rows = board.rows()
        from .service import build_board

        data = build_board(list(rows))
        return page("index.html", board=data, rows=rows, human=feedback_stats(db),
                    curves=board.curves(order=[o["id"] for o in data["overall"]]))

    @app.get("/submissions/{sid}", response_class=HTMLResponse)
    def submission_page(sid: str):
        sub = board.submission(sid)
        if sub is None:
            raise HTTPException(404, f"no submission {sid}")
        return page("submission.html", sub=sub, n_samples=n_samples)

    # -- human feedback ----------------------------------------------------------------------

    def cookie_user(request: Request) -> dict | None:
        return db.user_for_token(request.cookies.get(COOKIE))

    async def form(request: Request) -> dict[str, str]:
        # urlencoded forms parsed here, so python-multipart is not needed.
        data = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in data.items()}

    @app.get("/compare", response_class=HTMLResponse)
    def compare(request: Request, msg: str | None = None):
        user = cookie_user(request)
        if user is None:
            return page("login.html")
        messages = {"saved": "Saved.", "dup": "You had already labelled that pair; your first label was kept."}
        return page("compare.html", user=user, pair=next_pair(db, user["id"]), progress=progress(db, user["id"]),
                    message=messages.get(msg or ""))

    @app.post("/compare/login")
    async def login(request: Request):
        token = (await form(request)).get("token", "").strip()
        user = await run_in_threadpool(db.user_for_token, token)
        if user is None:
            return page("login.html", status=401, error="Unknown token.")
        resp = RedirectResponse("/compare", status_code=303)
        # SameSite=Strict keeps other sites from posting labels with this cookie.
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=30 * 24 * 3600)
        return resp

    @app.post("/compare/logout")
    def logout():
        resp = RedirectResponse("/compare", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    @app.post("/compare/label")
    async def label(request: Request):
        user = await run_in_threadpool(cookie_user, request)
        if user is None:
            raise HTTPException(401, "log in at /compare first")
        data = await form(request)
        try:
            pair_id = int(data.get("pair_id", ""))
        except ValueError:
            raise HTTPException(422, "pair_id must be an integer") from None
        try:
            saved = await run_in_threadpool(add_label, db, pair_id, user, data.get("choice", ""),
                                            data.get("comment", "").strip())
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        return RedirectResponse(f"/compare?msg={'saved' if saved else 'dup'}", status_code=303)

    return app
