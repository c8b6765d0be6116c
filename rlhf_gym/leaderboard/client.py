"""HTTP client of ``rlhf-gym submit --server``: post a submission, then follow its status.

The server may refuse a submission before reading its body: 401 (token), 413 (over
``--max-body-mb`` by Content-Length), 429 (rate limit). It then answers and closes the
connection, and a client still sending a large body gets a broken pipe or a reset, never the
answer (urllib raises ``BrokenPipeError`` there). So the request says ``Expect: 100-continue``
and the body is sent only after the server's ``100 Continue`` (uvicorn sends it when the app
starts reading the body); a final answer arriving instead is read and reported. A server that
ignores Expect gets the body after ``CONTINUE_WAIT_S``. If the connection still breaks while
sending, the answer is read if it arrived, and otherwise the error says what most likely
happened.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

CONTINUE_WAIT_S = 3.0
CHUNK = 1 << 16
STATUS_HINTS = {
    401: "the token was refused: check --token / $RLHF_GYM_TOKEN (`rlhf-gym leaderboard add-user` prints one)",
    413: "the submission is larger than the server accepts (its --max-body-mb)",
    422: "the submission was refused as invalid",
    429: "rate limit reached: wait and retry",
    503: "the server cannot score this right now",
}


class SubmitError(RuntimeError):
    """A submission the server refused or could not be reached for; the message is for people."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: dict


def _connection(base: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SubmitError(f"--server must be an http(s) URL like http://127.0.0.1:8000, got {base!r}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname, parts.port, timeout=timeout), parts.path.rstrip("/")


def _read(conn: http.client.HTTPConnection) -> Response:
    resp = conn.getresponse()
    raw = resp.read()
    try:
        body = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        body = {"detail": raw.decode("utf-8", "replace")[:500]}
    if not isinstance(body, dict):
        body = {"detail": body}
    return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)


def _interim_continue(sock: socket.socket, wait_s: float) -> bool | None:
    """True: the server sent ``100 Continue`` (consumed here); False: a final answer is waiting
    (left unread for http.client); None: nothing within ``wait_s`` (a server ignoring Expect)."""
    deadline = time.monotonic() + wait_s
    peek = b""
    while b"\r\n" not in peek:  # at least the whole status line, to tell 100 from a final answer
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return None if not peek else False
        before = peek
        peek = sock.recv(4096, socket.MSG_PEEK)
        if peek == before:  # closed, or nothing new
            if not peek:
                return False
            time.sleep(0.01)
    if not peek.startswith(b"HTTP/1.1 100") and not peek.startswith(b"HTTP/1.0 100"):
        return False
    data = b""
    while b"\r\n\r\n" not in data:  # the interim response is a status line and a blank line
        chunk = sock.recv(1)
        if not chunk:
            return False
        data += chunk
    return True


def post_json(base: str, path: str, data: bytes, headers: dict[str, str], timeout: float = 120,
              expect_continue: bool = True) -> Response:
    conn, prefix = _connection(base, timeout)
    try:
        # Over TLS the socket cannot be peeked at: no Expect there, the body goes at once.
        use_expect = expect_continue and not isinstance(conn, http.client.HTTPSConnection)
        conn.putrequest("POST", prefix + path)
        for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
            conn.putheader(k, v)
        if use_expect:
            conn.putheader("Expect", "100-continue")
        try:
            conn.endheaders()
        except OSError as err:
            raise SubmitError(f"cannot reach {base}: {err}") from None
        go_on = _interim_continue(conn.sock, CONTINUE_WAIT_S) if use_expect else None
        sent = 0
        if go_on is not False:
            try:
                for start in range(0, len(data), CHUNK):
                    # A final answer mid-body (the byte count passed the limit): stop and read it.
                    if start and select.select([conn.sock], [], [], 0)[0]:
                        break
                    conn.send(data[start:start + CHUNK])
                    sent = start + CHUNK
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and closed early; its answer is read below if it came
        try:
            return _read(conn)
        except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError) as err:
            raise SubmitError(
                f"the server closed the connection after {min(sent, len(data))} of {len(data)} bytes without an "
                f"answer that could be read ({type(err).__name__}); a body over its --max-body-mb limit is the "
                "usual cause") from None
    finally:
        conn.close()


def get_json(base: str, path: str, timeout: float = 60) -> Response:
    conn, prefix = _connection(base, timeout)
    try:
        conn.request("GET", prefix + path)
        return _read(conn)
    except OSError as err:
        raise SubmitError(f"cannot reach {base}: {err}") from None
    finally:
        conn.close()


def explain(resp: Response) -> str:
    detail = resp.body.get("detail", resp.body)
    if isinstance(detail, list):  # FastAPI's own validation errors
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    msg = f"server answered {resp.status}: {detail}"
    if resp.body.get("field"):
        msg += f" (field {resp.body['field']})"
    if resp.status == 429 and resp.headers.get("retry-after"):
        msg += f"; retry after {resp.headers['retry-after']} s"
    hint = STATUS_HINTS.get(resp.status)
    return f"{msg}\n  {hint}" if hint else msg


def submit(base: str, doc: dict, token: str, *, wait_s: float = 600, poll_s: float = 1.0, progress=None) -> dict:
    """Post ``doc``; unless ``wait_s`` is 0, poll its status until it is no longer pending (or
    ``wait_s`` passes). Returns the POST answer updated with the final status; raises SubmitError
    for any refusal (the message names the status code and the server's reason)."""
    data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    resp = post_json(base, "/api/submissions", data, {"Authorization": f"Bearer {token}"})
    if resp.status not in (200, 201, 202):
        raise SubmitError(explain(resp), resp.status)
    body = dict(resp.body)
    status_url = body.get("status_url") or f"/api/submissions/{body['id']}"
    deadline = time.monotonic() + wait_s
    while body.get("status") == "pending" and wait_s > 0 and time.monotonic() < deadline:
        time.sleep(poll_s)
        st = get_json(base, status_url + "?generations=false")
        if st.status != 200:
            raise SubmitError(explain(st), st.status)
        body.update({k: st.body.get(k) for k in ("status", "verified", "error")})
        if progress is not None:
            progress(st.body)
        if body["status"] in ("verified", "mismatch"):
            body["mismatches"] = {env: {k: row for k, row in e["comparison"].items() if row["status"] != "match"}
                                  for env, e in st.body.get("envs", {}).items()}
            if st.body.get("overopt"):
                body["mismatches"]["overopt"] = {k: row for k, row in st.body["overopt"]["comparison"].items()
                                                 if row["status"] != "match"}
            body["overopt"] = st.body.get("overopt")
    return body
