"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` into a temporary directory,
``pg_ctl start`` on a free 127.0.0.1 port with trust authentication, ``pg_ctl stop`` at the end.

It uses the server binaries of Debian's ``postgresql`` package (``apt-get install -y postgresql``;
``scripts/install-postgres.sh`` does it) and needs ``psycopg`` (``pip install 'rlhf-gym[postgres]'``).
PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` system user
the package creates, and the commands run through ``runuser``.

:func:`unavailable_reason` says why a server cannot be started here (None when it can), so tests
skip with that reason instead of failing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from .process import free_port

INSTALL_HINT = "apt-get install -y postgresql (or sh scripts/install-postgres.sh)"


def bin_dir() -> Path | None:
    """The newest installed server's bin directory (Debian keeps them off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
                   if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb else None


def _run_as() -> str | None:
    """The user to run the server as: None for ourselves, ``postgres`` when we are root."""
    return "postgres" if os.geteuid() == 0 else None


def unavailable_reason() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'rlhf-gym[postgres]'"
    bins = bin_dir()
    if bins is None or not (bins / "pg_ctl").exists():
        return f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}"
    user = _run_as()
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            return ("running as root and there is no 'postgres' user to run the server as "
                    "(the Debian package creates it)")
        if shutil.which("runuser") is None:
            return "running as root without runuser to start the server as 'postgres'"
    return None


class PostgresServer:
    """``with PostgresServer() as pg: url = pg.create_database()``."""

    def __init__(self):
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.bins = bin_dir()
        self.user = _run_as()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="rlhf-gym-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.started = False

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bins / args[0]), *args[1:]]
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _run(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}"
                               f"{proc.stderr[-2000:]}{log}")

    def start(self) -> "PostgresServer":
        self.root.chmod(0o755)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        # --no-sync and fsync=off: a throwaway cluster, durability across a power cut does not matter.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--no-instructions")
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        self.started = True
        return self

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, prefix: str = "lb") -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.started:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
            finally:
                self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
