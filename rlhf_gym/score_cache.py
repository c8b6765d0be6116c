"""Per-example score cache, so an identical generation is never scored twice.

A reward or judge score of one generation depends only on the env (its id and version: data and
prompt format), the split, the model (its description, weights sha256 included), the example id and
the generated text. ``evaluation.score_predictions(..., cache=C)`` looks every (example, text) up
in ``C`` first and sends only the misses to the models. ``C`` is anything with

- ``get_many(keys) -> {key: value}`` (absent keys left out) and
- ``put_many({key: value})`` (a key already present keeps its first value),

and values are small JSON objects, so a database table can hold them: the leaderboard's cache is
one (``rlhf_gym.leaderboard.db.DbScoreCache``): it survives restarts, is shared by every worker and
costs the server no memory. :class:`MemoryScoreCache` is a bounded in-process LRU.

A model whose description has no ``sha256`` (a plain Python function, say) is never cached:
nothing would notice that it changed.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any, Callable, Protocol, Sequence

import numpy as np

CACHE_FORMAT = 1  # bump when what an entry holds changes


class ScoreCache(Protocol):
    def get_many(self, keys: Sequence[str]) -> dict[str, Any]: ...

    def put_many(self, items: dict[str, Any]) -> None: ...


class MemoryScoreCache:
    """Bounded LRU of up to ``max_items`` entries, thread-safe."""

    def __init__(self, max_items: int = 100_000):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = int(max_items)
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        out = {}
        with self._lock:
            for key in keys:
                if key in self._items:
                    self._items.move_to_end(key)
                    out[key] = self._items[key]
        return out

    def put_many(self, items: dict[str, Any]) -> None:
        with self._lock:
            for key, value in items.items():
                self._items.setdefault(key, value)
                self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)


def model_namespace(task, split: str, role: str, model: dict[str, Any], **settings: Any) -> str | None:
    """The part of a cache key shared by every example scored by one model on one env and split
    (``role`` is ``"reward"`` or ``"judge"``; ``settings`` anything else the score depends on, such as
    the safety coefficient); None when the model cannot be identified by a hash."""
    if not model.get("sha256"):
        return None
    ident = {"format": CACHE_FORMAT, "env_id": task.env_id, "version": task.version, "split": split,
             "role": role, "model": model, "settings": settings}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def entry_key(namespace: str, example_id: str, text: str) -> str:
    # Length-prefixed fields: no two (id, text) pairs can produce the same string.
    raw = f"{namespace}|{len(example_id)}:{example_id}|{text}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def cached_scores(cache: ScoreCache | None, namespace: str | None, example_ids: Sequence[str],
                  texts: Sequence[str], compute: Callable[[list[int]], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute(positions)`` scores ``texts[p]`` for example ``example_ids[p]`` at each position and
    returns named arrays (e.g. ``{"total": ..., "score": ...}``). Without a cache or a namespace it
    is called once on every position; otherwise only on the positions whose (example, text) is not
    cached yet, each distinct pair once, and its results are stored. Arrays keep the dtype that
    ``compute`` gave them, so a cached score equals the one computed bit for bit."""
    n = len(texts)
    if cache is None or namespace is None or n == 0:
        return compute(list(range(n)))
    keys = [entry_key(namespace, str(i), t) for i, t in zip(example_ids, texts)]
    found = cache.get_many(list(dict.fromkeys(keys)))
    first: dict[str, int] = {}
    for pos, key in enumerate(keys):
        if key not in found:
            first.setdefault(key, pos)
    if first:
        positions = list(first.values())
        fresh = compute(positions)
        new = {key: {name: [float(arr[j]), np.asarray(arr).dtype.str] for name, arr in fresh.items()}
               for j, key in enumerate(first)}
        cache.put_many(new)
        found.update(new)
    names = list(found[keys[0]])
    out = {}
    for name in names:
        dtype = np.dtype(found[keys[0]][name][1])
        out[name] = np.array([found[k][name][0] for k in keys], dtype=dtype)
    return out
