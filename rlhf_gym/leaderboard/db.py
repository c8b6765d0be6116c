"""Storage for submissions, users, audit log and human feedback.

Plain DB-API so the same SQL runs on SQLite (default, WAL mode) and PostgreSQL (psycopg,
imported only for postgres URLs). SQL is written with ``?`` placeholders and translated for
psycopg; only the auto-increment column type differs between the two dialects.

Scored submissions are never updated in place or deleted: every accepted change is an INSERT,
and each one is paired with an ``audit_log`` row written in the same transaction. The two
exceptions are bookkeeping, not results: ``scoring_jobs`` is the queue of accepted submissions
waiting for a worker (its rows move pending -> done | failed, each move audited; see
``jobs.py``), and ``score_cache`` holds per-example reward/judge scores keyed by env version,
model hash, example id and text (``rlhf_gym.score_cache``), insert-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import threading
from datetime import datetime, timezone
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id {serial},
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,
    user_name TEXT,
    source TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    model TEXT NOT NULL,
    url TEXT NOT NULL,
    seeds TEXT NOT NULL,
    created TEXT NOT NULL,
    verified INTEGER NOT NULL,
    scorer TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS submission_envs (
    submission_id TEXT NOT NULL REFERENCES submissions(id),
    env_id TEXT NOT NULL,
    task TEXT NOT NULL,
    submitted_metrics TEXT NOT NULL,
    recomputed_metrics TEXT NOT NULL,
    comparison TEXT NOT NULL,
    verified INTEGER NOT NULL,
    generations TEXT NOT NULL,
    PRIMARY KEY (submission_id, env_id)
);
CREATE TABLE IF NOT EXISTS audit_log (
    id {serial},
    ts TEXT NOT NULL,
    actor TEXT,
    action TEXT NOT NULL,
    object TEXT,
    details TEXT
);
CREATE TABLE IF NOT EXISTS feedback_pairs (
    id {serial},
    env_id TEXT NOT NULL,
    example_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    system_a TEXT NOT NULL,
    system_b TEXT NOT NULL,
    response_a TEXT NOT NULL,
    response_b TEXT NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (env_id, example_id, system_a, system_b)
);
CREATE TABLE IF NOT EXISTS scoring_jobs (
    submission_id TEXT PRIMARY KEY,
    user_name TEXT,
    source TEXT NOT NULL,
    meta TEXT NOT NULL,
    document TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    attempts INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires DOUBLE PRECISION,
    error_kind TEXT,
    error_field TEXT,
    error TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scoring_jobs_by_status ON scoring_jobs (status, created);
CREATE TABLE IF NOT EXISTS score_cache (
    cache_key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback_labels (
    id {serial},
    pair_id INTEGER NOT NULL REFERENCES feedback_pairs(id),
    annotator_id INTEGER NOT NULL REFERENCES users(id),
    label TEXT NOT NULL CHECK (label IN ('a', 'b', 'tie', 'both_bad')),
    left_system TEXT NOT NULL,
    comment TEXT NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (pair_id, annotator_id)
);
"""

# Columns added after a table was first released: (table, column, type). They are nullable, and
# init_schema adds any that is missing, so a database created by an older version keeps working
# (its rows read NULL: e.g. a submission stored before curves existed has no curve).
ADDED_COLUMNS = [
    ("submissions", "overopt", "TEXT"),  # the attached over-optimisation curve's view (overopt_curve.py), JSON
]

SERIAL = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgres": "BIGSERIAL PRIMARY KEY"}


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so an unsalted fast hash is enough: there is
    # nothing to brute-force, and a deterministic hash allows an indexed lookup.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Tx:
    """One open transaction; rows come back as dicts on both backends."""

    def __init__(self, conn, dialect: str):
        self._conn = conn
        self._dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._dialect == "postgres" else sql

    def execute(self, sql: str, params: tuple | list = ()) -> int:
        cur = self._conn.cursor()
        cur.execute(self._sql(sql), tuple(params))
        return cur.rowcount

    def executemany(self, sql: str, rows: list) -> None:
        self._conn.cursor().executemany(self._sql(sql), [tuple(r) for r in rows])

    def all(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        cur = self._conn.cursor()
        cur.execute(self._sql(sql), tuple(params))
        if cur.description is None:
            return []
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def one(self, sql: str, params: tuple | list = ()) -> dict[str, Any] | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def audit(self, actor: str | None, action: str, obj: str | None, details: dict | None = None) -> None:
        self.execute(
            "INSERT INTO audit_log (ts, actor, action, object, details) VALUES (?, ?, ?, ?, ?)",
            (utcnow(), actor, action, obj, json.dumps(details or {}, sort_keys=True)),
        )


class Database:
    """Connections and transactions. Each thread keeps one open connection and reuses it
    (connections are never shared between threads; the server runs handlers on a thread pool and
    scores in worker threads): opening one per transaction cost a PostgreSQL backend process per
    query and, on SQLite, a WAL checkpoint whenever the last connection closed. A transaction
    opened inside another one on the same thread gets a connection of its own."""

    def __init__(self, url: str | os.PathLike):
        url = str(url)
        if url.startswith(("postgres://", "postgresql://")):
            self.dialect = "postgres"
            self.url = url
        else:
            self.dialect = "sqlite"
            self.url = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
            parent = os.path.dirname(os.path.abspath(self.url))
            os.makedirs(parent, exist_ok=True)
        self._local = threading.local()
        self.init_schema()

    def _connect(self):
        if self.dialect == "postgres":
            try:
                import psycopg
            except ImportError as err:
                raise RuntimeError("PostgreSQL URLs need psycopg: pip install 'rlhf-gym[postgres]'") from err
            return psycopg.connect(self.url)
        # isolation_level=None: we issue BEGIN ourselves so that writers take the lock up
        # front (BEGIN IMMEDIATE) instead of failing on lock upgrade mid-transaction.
        conn = sqlite3.connect(self.url, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA foreign_keys = ON")
        # In WAL mode NORMAL loses no committed transaction when the process dies (kill -9
        # included), only possibly the last ones on a power cut; FULL fsyncs every commit.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _thread_connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None and self.dialect == "postgres" and (conn.closed or conn.broken):
            conn = None  # the server restarted or the connection dropped: open a new one
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _discard(self, conn) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with contextlib.suppress(Exception):
            conn.close()

    @contextlib.contextmanager
    def tx(self, write: bool = False) -> Iterator[Tx]:
        nested = getattr(self._local, "depth", 0) > 0
        conn = self._connect() if nested else self._thread_connection()
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            if self.dialect == "sqlite":
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield Tx(conn, self.dialect)
            except BaseException:
                try:
                    conn.rollback()
                except Exception:
                    self._discard(conn)
                raise
            try:
                conn.commit()
            except BaseException:
                self._discard(conn)
                raise
        except BaseException:
            # A failed BEGIN (or a connection gone bad) must not be reused as it is.
            if self.dialect == "postgres" and not conn.closed and conn.broken:
                self._discard(conn)
            raise
        finally:
            self._local.depth -= 1
            if nested:
                with contextlib.suppress(Exception):
                    conn.close()

    def init_schema(self) -> None:
        conn = self._connect()
        try:
            if self.dialect == "sqlite":
                # WAL lets readers (page views) proceed while a submission is being written.
                conn.execute("PRAGMA journal_mode = WAL")
            ddl = SCHEMA.replace("{serial}", SERIAL[self.dialect])
            cur = conn.cursor()
            for stmt in ddl.split(";"):
                if stmt.strip():
                    cur.execute(stmt)
            conn.commit()
            self._add_columns(conn)
        finally:
            conn.close()

    def _columns(self, conn, table: str) -> set[str]:
        cur = conn.cursor()
        if self.dialect == "sqlite":
            cur.execute(f"PRAGMA table_info({table})")
            return {row[1] for row in cur.fetchall()}
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                    " AND table_name = %s", (table,))
        return {row[0] for row in cur.fetchall()}

    def _add_columns(self, conn) -> None:
        """The migration of :data:`ADDED_COLUMNS`. Checked first, so a started database takes no
        table lock; two processes starting at once on an old database may both try the ALTER, and
        the loser's "already exists" is ignored."""
        for table, column, sql_type in ADDED_COLUMNS:
            if column in self._columns(conn, table):
                continue
            cur = conn.cursor()
            if self.dialect == "postgres":
                cur.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type}")
            else:
                try:
                    cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
                except sqlite3.OperationalError as err:
                    if "duplicate column" not in str(err):
                        raise
            conn.commit()

    # -- users -----------------------------------------------------------------------------

    def add_user(self, name: str) -> str:
        """Create a user and return its token; only the hash is stored, so this is the
        only time the token can be seen."""
        name = name.strip()
        if not name or len(name) > 100:
            raise ValueError("user name must be 1-100 characters")
        token = "rlg_" + secrets.token_urlsafe(32)
        with self.tx(write=True) as tx:
            if tx.one("SELECT id FROM users WHERE name = ?", (name,)):
                raise ValueError(f"user {name!r} already exists")
            tx.execute(
                "INSERT INTO users (name, token_hash, created) VALUES (?, ?, ?)",
                (name, hash_token(token), utcnow()),
            )
            tx.audit("cli", "user.add", name)
        return token

    def user_for_token(self, token: str | None) -> dict | None:
        if not token:
            return None
        with self.tx() as tx:
            return tx.one("SELECT id, name FROM users WHERE token_hash = ?", (hash_token(token),))

    def audit_rows(self) -> list[dict]:
        with self.tx() as tx:
            return tx.all("SELECT * FROM audit_log ORDER BY id")


class DbScoreCache:
    """``rlhf_gym.score_cache`` protocol on the ``score_cache`` table: persistent, shared by every
    worker of the database, and nothing held in server memory."""

    CHUNK = 500  # keys per IN (...) query, well under SQLite's 32766 parameter limit

    def __init__(self, db: Database):
        self.db = db

    def get_many(self, keys) -> dict:
        keys = list(keys)
        out = {}
        with self.db.tx() as tx:
            for start in range(0, len(keys), self.CHUNK):
                chunk = keys[start:start + self.CHUNK]
                marks = ", ".join("?" for _ in chunk)
                for row in tx.all(f"SELECT cache_key, value FROM score_cache WHERE cache_key IN ({marks})", chunk):
                    out[row["cache_key"]] = json.loads(row["value"])
        return out

    def put_many(self, items: dict) -> None:
        if not items:
            return
        with self.db.tx(write=True) as tx:
            tx.executemany("INSERT INTO score_cache (cache_key, value) VALUES (?, ?)"
                           " ON CONFLICT (cache_key) DO NOTHING",
                           [(key, json.dumps(value)) for key, value in items.items()])

    def __len__(self) -> int:
        with self.db.tx() as tx:
            return int(tx.one("SELECT COUNT(*) AS n FROM score_cache")["n"])
