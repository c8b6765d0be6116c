"""What the frozen sentence encoders share: the device they run on, length-sorted batching under a
token budget, a bounded in-memory cache and a persistent on-disk cache of embeddings.

Both encoders of the suite are a :class:`CachedSentenceEncoder`: MiniLM under the reward heads
(:class:`rlhf_gym.rewards.embedding.SentenceEncoder`) and MPNet under the gold judge
(:class:`rlhf_gym.rewards.gold.MPNetEncoder`). An embedding is sentence-transformers' recipe: mean
over the non-padding token states, then L2 normalisation.

Faster without computing anything else (only float rounding moves, see below):

- Every distinct text is encoded once per process (in-memory LRU of ``cache_size`` entries).
- :func:`precompute_embeddings` hands the encoder every text of a whole evaluation at once (the
  agent's outputs, the vs agent's, the references, the prompts), so texts are sorted by token
  length over the whole set instead of within each batch of 64 that the env scores: on the v1
  main job that cuts the token positions run through MPNet from 288k to 197k (191k real tokens)
  and through MiniLM from 333k to 196k (178k real).
- A batch is cut at ``batch_size`` texts or ``max_batch_tokens`` padded token positions, whichever
  comes first, so a few long texts run in small batches instead of padding a large one.
- The persistent cache skips the encoder for the prompts and references an earlier run already
  embedded (they never change; responses are not stored).

Float noise: a text's embedding depends in its last bits on how long its batch was padded. Within
a process the in-memory cache makes every score bit-deterministic (a text keeps the vector it got
first); for prompts and references the disk cache does the same across processes (the first
vector stored is the one every process uses). Prompts and references are encoded in calls of
their own, never batched with responses, so their vectors do not depend on which agent was
scored. The measured per-example differences from the committed results are in
docs/performance.md.

The disk cache is one SQLite file, ``embeddings.sqlite3``, in ``$RLHF_GYM_EMBED_CACHE`` (a folder;
default ``cache_root()/embeddings``; ``off``, ``0``, ``false`` or ``no`` turn it off), keyed by a
fingerprint of the model folder (weights, tokenizer and config files), the pooling recipe, the
truncation length and the text's sha256. It is safe for several processes at once (SQLite WAL, one
short write transaction per batch, first writer wins), bounded (``$RLHF_GYM_EMBED_CACHE_MB``,
default 1024: past it the least recently used rows are deleted down to about 80% of it), and
never fatal: an unreadable or unwritable file turns it off for the process with one warning, and
scoring goes on.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

ENV_DISK_CACHE = "RLHF_GYM_EMBED_CACHE"
ENV_DISK_CACHE_MB = "RLHF_GYM_EMBED_CACHE_MB"
DEFAULT_DISK_CACHE_MB = 1024.0
OFF_VALUES = {"0", "off", "false", "no", "none", "disable", "disabled"}
DISK_CACHE_FILENAME = "embeddings.sqlite3"
# Bump when the pooling changes: it is part of every disk-cache key.
POOLING_RECIPE = "mean-pool+l2-normalise/float32/v1"
# Files of a model folder that decide its embeddings (the weights, the tokenizer, the config).
FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")
FINGERPRINT_SKIP = {"README.md", "data_config.json"}


# ------------------------------------------------------------------------------------ devices


def resolve_device(device: Any = None) -> str:
    """A torch device string for an encoder: ``None`` or ``"cpu"`` -> ``"cpu"``; ``"auto"`` -> the
    first GPU when there is one; ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device`` as given,
    checked to exist (a clear error otherwise)."""
    import torch

    if device is None:
        return "cpu"
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"an encoder device must be a string or torch.device, got {type(device).__name__}")
    device = device.strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown encoder device {device!r}: {err}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"encoder device {device!r} asked for, but torch sees no CUDA GPU")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"encoder device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"encoder device {device!r} asked for, but MPS is not available")
    return str(parsed)


def place_on_device(model: Any, device: Any) -> Any:
    """Move the encoders behind a reward model or judge to ``device`` (the policy's device in a
    trainer): follows an env reward's ``reward_model`` and a weighted sum's parts, and calls
    ``.to(device)`` on every part that has an encoder or a torch model. Returns ``model``."""
    for part in _reward_parts(model):
        mover = getattr(part, "to", None)
        if callable(mover) and (hasattr(part, "encoder") or hasattr(part, "model")):
            mover(device)
    return model


def _reward_parts(model: Any) -> Iterable[Any]:
    seen: set[int] = set()
    stack = [model]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        inner = getattr(item, "reward_model", None)  # EnvReward
        if inner is not None:
            stack.append(inner)
        for entry in getattr(item, "parts", None) or ():  # WeightedReward: (weight, model) pairs
            stack.append(entry[1] if isinstance(entry, tuple) else entry)


def precompute_embeddings(model: Any, prompts: Sequence[str], response_sets: Sequence[Sequence[str]],
                          references: Sequence[Sequence[str]] | None, progress: bool = False) -> None:
    """Embed, in one length-sorted pass per encoder, every text that scoring each of
    ``response_sets`` (lists aligned with ``prompts`` and ``references``) with ``model`` will need.
    The scores that follow then come from the cache; models without encoders are skipped."""
    if not response_sets:
        return
    n = len(prompts)
    all_prompts = [p for _ in response_sets for p in prompts]
    all_responses = [r for responses in response_sets for r in responses]
    all_refs = None if references is None else [list(r) for _ in response_sets for r in references]
    if any(len(responses) != n for responses in response_sets):
        raise ValueError("precompute_embeddings: every response set must have one response per prompt")
    for part in _reward_parts(model):
        hook = getattr(part, "precompute", None)
        if callable(hook):
            hook(all_prompts, all_responses, all_refs, progress=progress)


# ------------------------------------------------------------------------------- batching


def length_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` sorted by length (stable), cut into batches of at most ``batch_size``
    items whose padded size (items x longest) stays within ``max_batch_tokens`` (a single item
    longer than the budget gets a batch of its own)."""
    if batch_size < 1 or max_batch_tokens < 1:
        raise ValueError("batch_size and max_batch_tokens must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending, so the newcomer is the longest of its batch
        if current and (len(current) >= batch_size or (len(current) + 1) * lengths[i] > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


# ------------------------------------------------------------------------------ disk cache


def disk_cache_dir() -> Path | None:
    """The folder of the persistent embedding cache, or ``None`` when ``$RLHF_GYM_EMBED_CACHE``
    turns it off."""
    from rlhf_gym.paths import cache_root

    value = os.environ.get(ENV_DISK_CACHE)
    if value is None:
        return cache_root() / "embeddings"
    if value.strip().lower() in OFF_VALUES or not value.strip():
        return None
    return Path(value).expanduser()


def disk_cache_max_bytes() -> int:
    value = os.environ.get(ENV_DISK_CACHE_MB)
    if value is None or not value.strip():
        return int(DEFAULT_DISK_CACHE_MB * 2**20)
    try:
        mb = float(value)
    except ValueError:
        raise ValueError(f"${ENV_DISK_CACHE_MB} must be a number of megabytes, got {value!r}") from None
    if not mb > 0:
        raise ValueError(f"${ENV_DISK_CACHE_MB} must be > 0, got {value!r} (to turn the cache off, "
                         f"set {ENV_DISK_CACHE}=off)")
    return int(mb * 2**20)


_DISK_CACHES: dict[Path, "DiskEmbeddingCache"] = {}
_DISK_CACHES_LOCK = threading.Lock()


def default_disk_cache() -> "DiskEmbeddingCache | None":
    """The process's disk cache for the folder the environment names (one per folder)."""
    folder = disk_cache_dir()
    if folder is None:
        return None
    with _DISK_CACHES_LOCK:
        cache = _DISK_CACHES.get(folder)
        if cache is None:
            cache = _DISK_CACHES[folder] = DiskEmbeddingCache(folder, disk_cache_max_bytes())
        return cache


class DiskEmbeddingCache:
    """Embeddings in one SQLite file: ``(space, key) -> float32 vector``, with a last-used time
    for eviction. ``space`` names the model and settings, ``key`` is the sha256 of the text."""

    REFRESH_US = 3600 * 10**6  # a hit rewrites its last-used time at most once an hour (reads stay reads)
    EVICT_TO = 0.8  # past the bound, delete the least recently used rows down to about 80% of it

    def __init__(self, folder: str | Path, max_bytes: int = int(DEFAULT_DISK_CACHE_MB * 2**20)):
        self.path = Path(folder) / DISK_CACHE_FILENAME
        self.max_bytes = int(max_bytes)
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.disabled: str | None = None  # why, once an error turned the cache off
        self.hits = self.stored = self.evicted = 0

    # -- connection -------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: transactions are opened explicitly, and kept short
        conn = sqlite3.connect(str(self.path), timeout=120, isolation_level=None, check_same_thread=False)
        # 16 KiB pages hold five MPNet rows (3 KiB) or ten MiniLM ones in place; a rowid table (not
        # WITHOUT ROWID, whose rows spill to overflow pages past ~1 KiB) keeps them there. The page
        # size only takes effect on a new file, before WAL is switched on.
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA synchronous=NORMAL")
        # Two processes opening a new file at once: switching to WAL and a schema write begun as a
        # read can both get "database is locked" at once, without SQLite's busy wait; retried here.
        deadline = time.monotonic() + 120
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN IMMEDIATE")  # waits (busy timeout) for the write lock
                conn.execute("CREATE TABLE IF NOT EXISTS embeddings (space TEXT NOT NULL, key BLOB NOT NULL, "
                             "vector BLOB NOT NULL, used INTEGER NOT NULL, PRIMARY KEY (space, key))")
                conn.execute("CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used)")
                conn.execute("COMMIT")
                break
            except sqlite3.OperationalError as err:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() > deadline:
                    conn.close()
                    raise
                time.sleep(0.05)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _fail(self, err: Exception) -> None:
        self.disabled = f"{type(err).__name__}: {err}"
        self._conn = None
        warnings.warn(f"embedding disk cache {self.path} turned off for this process ({self.disabled}); scores are "
                      f"unaffected, only slower. Delete the file if it is corrupt, or set {ENV_DISK_CACHE}=off.",
                      RuntimeWarning, stacklevel=3)

    # -- reads and writes ---------------------------------------------------------------

    def get(self, space: str, keys: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        """The stored vectors among ``keys`` (rows of another length are ignored)."""
        if self.disabled or not keys:
            return {}
        found: dict[bytes, np.ndarray] = {}
        stale: list[bytes] = []
        now = _now_us()
        with self._lock:
            try:
                conn = self._connection()
                for start in range(0, len(keys), 500):
                    chunk = list(keys[start:start + 500])
                    rows = conn.execute(
                        f"SELECT key, vector, used FROM embeddings WHERE space = ? AND key IN "
                        f"({','.join('?' * len(chunk))})", [space, *chunk]).fetchall()
                    for key, blob, used in rows:
                        if len(blob) != 4 * dim:
                            continue
                        found[bytes(key)] = np.frombuffer(blob, dtype=np.float32)
                        if used < now - self.REFRESH_US:
                            stale.append(bytes(key))
                if stale:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany("UPDATE embeddings SET used = ? WHERE space = ? AND key = ?",
                                     [(now, space, k) for k in stale])
                    conn.execute("COMMIT")
            except (sqlite3.Error, OSError) as err:
                self._rollback()
                self._fail(err)
                return {}
        self.hits += len(found)
        return found

    def put(self, space: str, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        """Store vectors; a key already there keeps its first vector. Evicts past the bound."""
        if self.disabled or not items:
            return
        now = _now_us()
        rows = [(space, key, np.ascontiguousarray(vec, dtype=np.float32).tobytes(), now) for key, vec in items]
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                cursor = conn.executemany(
                    "INSERT OR IGNORE INTO embeddings (space, key, vector, used) VALUES (?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
                self.stored += max(0, cursor.rowcount)
                self._evict_if_needed(conn)
            except (sqlite3.Error, OSError) as err:
                self._rollback()
                self._fail(err)

    def _rollback(self) -> None:
        try:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def used_bytes(self, conn: sqlite3.Connection | None = None) -> int:
        """Bytes of the file in use (pages minus free pages; the WAL is not counted)."""
        conn = conn or self._connection()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def _evict_if_needed(self, conn: sqlite3.Connection) -> None:
        used = self.used_bytes(conn)
        if used <= self.max_bytes:
            return
        conn.execute("BEGIN IMMEDIATE")
        count = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        drop = min(count, max(1, math.ceil(count * (1.0 - self.EVICT_TO * self.max_bytes / used))))
        cursor = conn.execute("DELETE FROM embeddings WHERE rowid IN "
                              "(SELECT rowid FROM embeddings ORDER BY used, rowid LIMIT ?)", (drop,))
        conn.execute("COMMIT")
        self.evicted += max(0, cursor.rowcount)
        # Deleted rows leave half-empty pages all over the key-ordered tree (old rows are spread
        # by hash); rewriting the file packs it, so its size measures its content again. This
        # happens once per EVICT_TO fraction of new data. Busy readers elsewhere may refuse it.
        try:
            conn.execute("VACUUM")
        except sqlite3.OperationalError:
            pass

    def count(self, space: str | None = None) -> int:
        with self._lock:
            conn = self._connection()
            if space is None:
                return conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM embeddings WHERE space = ?", (space,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def _now_us() -> int:
    """Last-used stamps in microseconds, so the batches of one second keep their order."""
    return time.time_ns() // 1000


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def folder_fingerprint(folder: str | Path, known_sha256: dict[str, str] | None = None) -> str:
    """sha256 over the files of a model folder that decide its embeddings (weights, tokenizer,
    config); ``known_sha256`` supplies hashes already on record (the MPNet marker's weights)."""
    folder = Path(folder)
    known = known_sha256 or {}
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name in FINGERPRINT_SKIP:
            continue
        if not path.name.endswith(FINGERPRINT_SUFFIXES):
            continue
        sha = known.get(path.name)
        if sha is None:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
            sha = h.hexdigest()
        digest.update(f"{path.name}:{sha}\n".encode())
    return digest.hexdigest()


# -------------------------------------------------------------------------------- encoder


class CachedSentenceEncoder:
    """A frozen Hugging Face encoder pooled like sentence-transformers, with the caches above.

    Subclasses load ``self.tokenizer`` and ``self.model`` and call :meth:`_setup`; they set
    ``embed_dim``, ``default_max_length`` and ``progress_desc``.
    """

    embed_dim: int = 0
    default_max_length: int = 512
    progress_desc: str = "embedding"

    def _setup(self, model_dir: Path, device: Any, batch_size: int, max_batch_tokens: int, cache_size: int,
               disk_cache: "DiskEmbeddingCache | bool | None", known_sha256: dict[str, str] | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.device = resolve_device(device)
        if self.device != "cpu":
            self.model.to(self.device)
        self.batch_size = int(batch_size)
        self.max_batch_tokens = int(max_batch_tokens)
        self.cache_size = int(cache_size)
        # (text, max_length) -> vector, least recently used first
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self._known_sha256 = known_sha256
        self._fingerprint: str | None = None
        if disk_cache is None or disk_cache is True:
            disk_cache = default_disk_cache()
        self.disk_cache: DiskEmbeddingCache | None = disk_cache or None
        self.texts_encoded = 0  # texts run through the model (neither cache had them)
        self.texts_from_disk = 0  # texts read from the disk cache

    # -- identity ---------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """sha256 of the model folder's weights, tokenizer and config files (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = folder_fingerprint(self.model_dir, self._known_sha256)
        return self._fingerprint

    def cache_space(self, max_length: int) -> str:
        key = f"{self.fingerprint}|{POOLING_RECIPE}|max_length={int(max_length)}|dim={self.embed_dim}"
        device_type = str(self.device).split(":", 1)[0]
        if device_type != "cpu":
            # a GPU's vectors differ from the CPU's in their last bits: kept apart, so a CPU run
            # never reads them and stays bit-comparable with the committed results (CPU keys unchanged)
            key += f"|device={device_type}"
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    # -- device -----------------------------------------------------------------------

    def to(self, device: Any) -> "CachedSentenceEncoder":
        """Run the encoder on ``device`` from now on (cached embeddings stay valid)."""
        device = resolve_device(device)
        with self._lock:
            if device != self.device:
                self.model.to(device)
                self.device = device
        return self

    # -- encoding ---------------------------------------------------------------------

    def _forward(self, batch: dict) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = {k: v.to(self.device) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled.float().cpu().numpy()

    def _encode_fresh(self, texts: list[str], max_length: int, progress: bool) -> list[np.ndarray]:
        """Run the model over ``texts`` (tokenised once, sorted by token length, batched under the
        token budget); vectors in the order of ``texts``."""
        encoded = self.tokenizer(texts, truncation=True, max_length=max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        batches = length_batches(lengths, self.batch_size, self.max_batch_tokens)
        out: list[np.ndarray | None] = [None] * len(texts)
        bar = None
        if progress and len(texts) > self.batch_size:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc=f"{self.progress_desc} (max_len {max_length})", unit="text",
                       leave=False)
        try:
            for idx in batches:
                features = {key: [encoded[key][i] for i in idx] for key in encoded.keys()}
                batch = self.tokenizer.pad(features, padding=True, return_tensors="pt")
                for i, vec in zip(idx, self._forward(dict(batch))):
                    out[i] = vec
                self.texts_encoded += len(idx)
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out  # type: ignore[return-value]

    def encode(self, texts: Sequence[str], max_length: int | None = None, progress: bool = False,
               persist: bool = False) -> np.ndarray:
        """``(n, embed_dim)`` float32 unit vectors. A text comes from the in-memory cache, else
        (``persist``) the disk cache, else the model; all of one call's new texts are encoded
        together, sorted by length.

        ``persist=True`` is for texts that never change (an env's prompts and references): they
        are looked up on disk and stored there, and when another process stored a text first,
        its vector is the one used, so every process sharing the cache agrees on it bit for bit.
        Responses are not persisted: a policy's outputs rarely repeat and would only fill the
        file."""
        max_length = int(max_length or self.default_max_length)
        texts = [str(t) for t in texts]
        with self._lock:
            found: dict[str, np.ndarray] = {}
            for text in texts:
                if text in found:
                    continue
                vec = self._cache.get((text, max_length))
                if vec is not None:
                    self._cache.move_to_end((text, max_length))
                    found[text] = vec
            missing = [t for t in dict.fromkeys(texts) if t not in found]
            space = None
            if persist and missing and self.disk_cache is not None and not self.disk_cache.disabled:
                space = self.cache_space(max_length)
                keys = [text_key(t) for t in missing]
                stored = self.disk_cache.get(space, keys, self.embed_dim)
                if stored:
                    for text, key in zip(missing, keys):
                        vec = stored.get(key)
                        if vec is not None:
                            found[text] = vec
                            self._cache[(text, max_length)] = vec
                    self.texts_from_disk += len(stored)
                    missing = [t for t in missing if t not in found]
            if missing:
                vectors = self._encode_fresh(missing, max_length, progress)
                for text, vec in zip(missing, vectors):
                    found[text] = vec
                    self._cache[(text, max_length)] = vec
                if space is not None:
                    keys = [text_key(t) for t in missing]
                    self.disk_cache.put(space, list(zip(keys, vectors)))
                    # a text another process stored meanwhile keeps that process's vector: adopt it
                    stored = self.disk_cache.get(space, keys, self.embed_dim)
                    for text, key, vec in zip(missing, keys, vectors):
                        other = stored.get(key)
                        if other is not None and not np.array_equal(other, vec):
                            found[text] = other
                            self._cache[(text, max_length)] = other
            self.trim_cache()
            if not texts:
                return np.zeros((0, self.embed_dim), dtype=np.float32)
            return np.stack([found[t] for t in texts])

    def trim_cache(self) -> None:
        """Drop the least recently used in-memory entries beyond ``cache_size``."""
        with self._lock:
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Empty the in-memory cache (the disk cache is left alone)."""
        with self._lock:
            self._cache.clear()
