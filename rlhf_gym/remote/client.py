"""``RemoteEnv``: a ``gymnasium.Env`` whose reset and step run on an ``rlhf-gym serve-env`` server.

Only the standard library is used (``http.client`` with a kept-alive connection), so a trainer
machine needs neither the data nor the reward models: the server owns both.
"""

from __future__ import annotations

import http.client
import json
import time
import warnings
from typing import Any
from urllib.parse import urlsplit

import gymnasium as gym

from rlhf_gym.remote import protocol


class RemoteEnvError(RuntimeError):
    """The server refused a request (unknown session, at capacity, env failure): ``status`` is
    the HTTP status, ``code`` the protocol error code."""

    def __init__(self, message: str, status: int, code: str | None):
        super().__init__(message)
        self.status, self.code = status, code


class RemoteEnv(gym.Env[str, str]):
    """``RemoteEnv("http://127.0.0.1:8000", env_id="rlhf_gym/Dialogue-v1")``.

    Behaves like ``gymnasium.make(env_id, **server_env_kwargs)`` in process: same spaces, same
    prompts for the same ``reset(seed=...)`` / ``options``, same rewards and info for the same
    response. Each instance holds one server session (opened by its first ``reset``, closed by
    ``close()``); for a vector of them use ``gymnasium.vector.SyncVectorEnv([lambda: RemoteEnv(url)] * n)``.

    A bad action raises the in-process exception type (``TypeError`` for a non-str, ``ValueError``
    over the length limit); other refusals raise :class:`RemoteEnvError`.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, url: str, env_id: str | None = None, timeout: float = 120.0, render_mode: str | None = None):
        from rlhf_gym.envs.text_env import text_space

        parts = urlsplit(url if "//" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"RemoteEnv url must be http(s)://HOST[:PORT], got {url!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.url, self.timeout, self.render_mode = url.rstrip("/"), float(timeout), render_mode
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None
        self._last_used = 0.0
        self.session_id: str | None = None
        self.server = self._request("GET", "/metadata")
        served = self.server["env_id"]
        if env_id is not None and env_id not in (served, served.split("/", 1)[-1]):
            raise ValueError(f"the server at {self.url} serves {served}, not {env_id}")
        self.env_id = served
        self.observation_space = text_space(self.server["max_prompt_chars"], min_length=1)
        self.action_space = text_space(self.server["max_response_chars"])

    # -- transport -----------------------------------------------------------------------

    # Servers close kept-alive connections after a few idle seconds (uvicorn: 5 s); reconnecting
    # before that avoids sending a request into a socket the server is closing.
    _KEEPALIVE_S = 2.0

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is not None and time.monotonic() - self._last_used > self._KEEPALIVE_S:
            self._conn.close()
            self._conn = None
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = protocol.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                self._last_used = time.monotonic()
                break
            except (ConnectionError, http.client.HTTPException) as err:
                # A kept-alive connection the server has dropped: reconnect once.
                conn.close()
                self._conn = None
                if attempt:
                    raise RemoteEnvError(f"cannot reach {self.url}: {err}", 0, None) from err
            except OSError as err:
                conn.close()
                self._conn = None
                raise RemoteEnvError(f"cannot reach {self.url}: {err}", 0, None) from err
        try:
            payload = json.loads(raw.decode("utf-8")) if raw else {}
        except ValueError:
            payload = {"detail": raw[:200].decode("utf-8", "replace")}
        if response.status >= 400:
            detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
            message = f"{method} {path}: {response.status}: {detail}"
            error_type = protocol.CLIENT_ERROR_TYPES.get(payload.get("error_type")) if isinstance(payload, dict) else None
            if response.status == 422 and error_type is not None:
                raise error_type(message)
            raise RemoteEnvError(message, response.status, payload.get("code") if isinstance(payload, dict) else None)
        return payload

    # -- gymnasium API -------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        body: dict[str, Any] = {"seed": seed, "options": options}
        if self.session_id is not None:
            body["session_id"] = self.session_id
        try:
            result = self._request("POST", "/reset", body)
        except RemoteEnvError as err:
            if err.status != 404 or self.session_id is None:
                raise
            # The session expired while idle: a reset starts a new episode anyway, so open another
            # (an unseeded reset then draws from a fresh RNG, not the expired session's stream).
            if seed is None:
                warnings.warn(f"session {self.session_id} expired on the server; opened a new one with a fresh RNG "
                              "(pass seed= to reset for a reproducible draw)", stacklevel=2)
            self.session_id = None
            body.pop("session_id")
            result = self._request("POST", "/reset", body)
        self.session_id = result["session_id"]
        return result["observation"]["text"], result["metadata"]

    def step(self, action: str):
        if self.session_id is None:
            raise RuntimeError("call reset() before step()")
        result = self._request("POST", "/step", {"action": {"response": action}, "session_id": self.session_id})
        obs = result["observation"]
        return obs["text"], float(result["reward"]), obs["terminated"], obs["truncated"], result["metadata"]

    def state(self) -> dict:
        """The server's view of this session (episode id, step count, transcript...)."""
        if self.session_id is None:
            raise RuntimeError("call reset() before state()")
        return self._request("GET", f"/state?session_id={self.session_id}")

    def render(self) -> str | None:
        if self.render_mode == "ansi" and self.session_id is not None:
            return self.state()["transcript"]
        return None

    def close(self) -> None:
        if self.session_id is not None:
            try:
                self._request("DELETE", f"/sessions/{self.session_id}")
            except RemoteEnvError:
                pass  # already expired or the server is gone: nothing is left to free
            self.session_id = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        super().close()
