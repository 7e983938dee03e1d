"""A private PostgreSQL server for fault tests: its own data directory and port, so a test can
stop and restart it (the shared server on 5432 must never be touched).

Run as the `postgres` OS user (initdb refuses root), trust authentication on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

def _pg_bin() -> Path:
    """initdb and pg_ctl of the PostgreSQL the machine has (Debian keeps them per version)."""
    if os.environ.get("RESWEEP_PG_BIN"):
        return Path(os.environ["RESWEEP_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    def __init__(self, memory_limit: int | None = None) -> None:
        """`memory_limit`: bytes of address space each server process may map (RLIMIT_AS on
        the postmaster, inherited by every backend): past it an allocation fails and PostgreSQL
        ends that one query with "out of memory" instead of the kernel killing the backend."""
        self.memory_limit = memory_limit
        self.user = pwd.getpwnam("postgres")
        self.root = Path(tempfile.mkdtemp(prefix="rspg-", dir="/tmp"))
        os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                           "--no-sync", "-E", "UTF8"])
        self.start()

    def _as_postgres(self, cmd: list[str], timeout: float = 120) -> None:
        limit = getattr(self, "memory_limit", None)

        def demote() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            if os.getuid() == 0:
                os.setgid(self.user.pw_gid)
                os.setuid(self.user.pw_uid)

        done = subprocess.run(cmd, preexec_fn=demote if os.getuid() == 0 or limit else None, capture_output=True,
                              text=True, timeout=timeout, cwd=self.root, env={**os.environ, "LC_ALL": "C.UTF-8"})
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                           str(self.root / "log"), "-w", "-t", "60", "start"])

    def stop(self) -> None:
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def restart(self, down_s: float) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        auth = f"postgres:{password}" if password else "postgres"
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str) -> None:
        """Run each statement as the superuser, outside a transaction (CREATE/DROP DATABASE, ...)."""
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for sql in statements:
                    conn.execute(sa.text(sql))
        finally:
            engine.dispose()

    def new_database(self) -> str:
        """A fresh database on this server; returns its name."""
        name = f"rs_{uuid.uuid4().hex[:10]}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def postmaster(self) -> tuple[int, float]:
        """(pid, start time) of the running postmaster: the same pair before and after a query
        means the server was not restarted."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return pid, os.stat(f"/proc/{pid}").st_ctime

    def backends_rss(self) -> dict[int, int]:
        """Resident bytes of each of the postmaster's child processes (backends and helpers)."""
        pid = self.postmaster()[0]
        sizes = {}
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
            sizes[int(child)] = int(rss) * 1024
        return sizes

    def close(self) -> None:
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
