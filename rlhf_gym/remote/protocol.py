"""What goes over the wire between ``rlhf-gym serve-env`` and :class:`~rlhf_gym.remote.RemoteEnv`.

The shapes follow the public OpenEnv protocol (``POST /reset``, ``POST /step`` with
``{"action": {...}}``, ``GET /state``, ``/ws`` messages ``{"type": "reset"|"step"|"state"|"close",
"data": ...}``; results ``{"observation": {...}, "reward": float|null, "done": bool, "metadata": {...}}``).
What is rlhf-gym's own: the action is ``{"response": str}``, the observation ``{"text": str,
"terminated": bool, "truncated": bool}``, ``metadata`` is the gymnasium ``info`` dict, and HTTP
requests name their session with ``session_id`` (see docs/serving.md).

This module has no web dependency: the client uses only the standard library.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

PROTOCOL_VERSION = "rlhf-gym-serve/1"

# Error codes: OpenEnv's WebSocket codes, plus the HTTP status each one is sent with.
INVALID_JSON = "INVALID_JSON"
UNKNOWN_TYPE = "UNKNOWN_TYPE"
VALIDATION_ERROR = "VALIDATION_ERROR"  # a bad action or reset option (422), a step out of order (409)
CAPACITY_REACHED = "CAPACITY_REACHED"  # --max-sessions sessions are open (503)
SESSION_ERROR = "SESSION_ERROR"  # unknown or expired session id (404)
EXECUTION_ERROR = "EXECUTION_ERROR"  # the env itself failed (500)

# Exception types a client may re-raise for a 422, so a bad action fails remotely with the same
# type as in process (TypeError for a non-str, ValueError for one over the length limit).
CLIENT_ERROR_TYPES = {"TypeError": TypeError, "ValueError": ValueError}

ACTION_KEYS = ("response",)
ACTION_OPTIONAL_KEYS = ("metadata",)  # OpenEnv's Action base class carries a metadata dict


def jsonable(value: Any) -> Any:
    """``value`` (a gymnasium info dict, an observation...) as plain JSON types: numpy scalars
    and arrays become Python numbers and lists, tuples become lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def dumps(payload: Any) -> str:
    """JSON text with floats written exactly (Python's repr round-trips every float64) and NaN /
    Infinity allowed, so a reward arrives bit-identical to the in-process one."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=True)


def result_payload(observation: str, reward: float | None, terminated: bool, truncated: bool,
                   info: dict[str, Any]) -> dict[str, Any]:
    """An OpenEnv result for a text env: what ``reset`` (reward None) and ``step`` return."""
    return {
        "observation": {"text": observation, "terminated": bool(terminated), "truncated": bool(truncated)},
        "reward": None if reward is None else float(reward),
        "done": bool(terminated or truncated),
        "metadata": jsonable(info),
    }


def parse_action(action: Any) -> Any:
    """The response text inside an OpenEnv action object ``{"response": str}``; the text itself
    is checked by the env's own rule (type and length) afterwards."""
    if not isinstance(action, dict):
        raise TypeError(f'action must be an object {{"response": "<text>"}}, got {type(action).__name__}: '
                        f"{action!r:.80}")
    unknown = sorted(set(action) - set(ACTION_KEYS) - set(ACTION_OPTIONAL_KEYS))
    if unknown or "response" not in action:
        raise ValueError(f'action must be an object {{"response": "<text>"}}; got keys {sorted(action)}')
    return action["response"]


def action_schema(max_chars: int) -> dict[str, Any]:
    return {"title": "TextAction", "type": "object", "additionalProperties": False, "required": ["response"],
            "properties": {"response": {"type": "string", "maxLength": int(max_chars),
                                        "description": "the response text (the gymnasium action)"},
                           "metadata": {"type": "object"}}}


def observation_schema(max_chars: int) -> dict[str, Any]:
    return {"title": "TextObservation", "type": "object",
            "properties": {"text": {"type": "string", "maxLength": int(max_chars),
                                    "description": "the prompt (reset, multi-turn step) or prompt + ' ' + response "
                                                   "(the final observation of a single-turn episode)"},
                           "terminated": {"type": "boolean"}, "truncated": {"type": "boolean"}}}


STATE_SCHEMA = {"title": "TextState", "type": "object",
                "properties": {"episode_id": {"type": ["string", "null"]}, "step_count": {"type": "integer"},
                               "session_id": {"type": "string"}, "env_id": {"type": "string"},
                               "done": {"type": "boolean"}, "example_id": {"type": ["string", "null"]},
                               "observation": {"type": ["string", "null"]}, "transcript": {"type": ["string", "null"]}}}
