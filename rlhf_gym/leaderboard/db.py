"""Storage for submissions, users, audit log and human feedback.

Plain DB-API so the same SQL runs on SQLite (default, WAL mode) and PostgreSQL (psycopg,
imported only for postgres URLs). SQL is written with ``?`` placeholders and translated for
psycopg; only the auto-increment column type differs between the two dialects.

Nothing is ever updated in place or deleted: every accepted change is an INSERT, and each
one is paired with an ``audit_log`` row written in the same transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
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
    """Connection factory. A fresh connection per transaction keeps it thread-safe
    (the server runs handlers on a thread pool) without a pool to manage."""

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
        self.init_schema()

    def _connect(self):
        if self.dialect == "postgres":
            try:
                import psycopg
            except ImportError as err:
                raise RuntimeError("PostgreSQL URLs need psycopg: pip install 'psycopg[binary]'") from err
            return psycopg.connect(self.url)
        # isolation_level=None: we issue BEGIN ourselves so that writers take the lock up
        # front (BEGIN IMMEDIATE) instead of failing on lock upgrade mid-transaction.
        conn = sqlite3.connect(self.url, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextlib.contextmanager
    def tx(self, write: bool = False) -> Iterator[Tx]:
        conn = self._connect()
        try:
            if self.dialect == "sqlite":
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            tx = Tx(conn, self.dialect)
            try:
                yield tx
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        finally:
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
        finally:
            conn.close()

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
