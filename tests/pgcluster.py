"""A private PostgreSQL cluster for tests: `initdb` into a temp dir, started on a free loopback port
with its socket in that dir, stopped and removed at the end. Uses Debian's ``postgresql`` package
(`make test` installs it when missing and it can); as root the server runs as the ``postgres``
user (initdb refuses root).

    with PrivateCluster() as pg:
        url = pg.create_database("t1")   # postgresql://thinkgate@127.0.0.1:PORT/t1
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def pg_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (PATH first, then Debian's newest
    /usr/lib/postgresql/N/bin), or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    return Path(dirs[-1]) if dirs and Path(dirs[-1], "initdb").exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateCluster:
    """Args:
        user: the superuser name (trust authentication on loopback only).

    Raises:
        RuntimeError: PostgreSQL is not installed, or the cluster did not start (with its log).
    """

    def __init__(self, user: str = "thinkgate"):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; `make test` does it as root)")
        self.user = user
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="thinkgate-pg-"))
        self.data = self.root / "data"
        self._as = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        res = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{args[0]} failed ({res.returncode}): {res.stderr.strip()}\n{log[-2000:]}")

    def start(self) -> "PrivateCluster":
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=100 -c shared_buffers=32MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name` (dropped first if it exists); returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PrivateCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
