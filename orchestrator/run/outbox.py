"""The recorder's outbox: every write of a sweep's results, in order, through database outages.

The recorder puts each write (a trial's row, a result, a status) here; the outbox writes it at
once when the database answers. When it does not (a PostgreSQL restart, a SQLite file locked by
another writer), the writes wait here in the order they came, and are retried with backoff on
each of Tune's steps, so trials keep training meanwhile. Past `memory_ops` waiting writes the
oldest go to a spill file under the sweep's results directory (JSON lines), so memory stays
bounded; the spill file is written back first, and a resumed sweep's outbox writes back what a
stopped one left there. Every write is an idempotent upsert (db.writes), so writing one again
after a failure half-way, or after a restart, never duplicates a row.

Some failures end the wait at once and make the sweep stop cleanly (`fatal`): the database
unreachable for longer than `wait_s`, a full filesystem (the database's or the results
directory's), and a database that is gone: a SQLite path that no longer names the file that was
opened (deleted, or replaced by another file), a PostgreSQL database that was dropped, or tables
that vanished.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.engine import Engine

from db import attempts, writes
from db.engine import WRITE_ERRORS, redact, sqlite_path, writer_engine

SPILL_FILE = "resweep-pending.jsonl"
MEMORY_OPS = 5000  # waiting writes kept in memory before the oldest go to the spill file
BATCH = 500  # results written in one transaction when catching up
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # between retries; the last repeats
SQLITE_WRITE_BUSY_MS = 1000  # the recorder's own lock wait: short, so Tune's loop never stalls long
MIN_FREE_BYTES = 64 * 2**20  # below this on the database's or the results' filesystem, the sweep stops
SPACE_CHECK_S = 5.0  # how often free space is looked at
PG_GONE = {"3D000", "42P01"}  # invalid_catalog_name (database dropped), undefined_table
PG_FULL = {"53100"}  # disk_full

# One write: ("trial", key, config, status) | ("result", key, config, epoch, metrics, layer_stats)
# | ("status", key, config, status, error, ended) | ("sweep", status, finished)
# | ("attempt_start", key, config) | ("attempt_host", key, config, node_ip, hostname)
# | ("attempt_end", key, config, error, node_ip, hostname) | ("checkpoint", key, config, uri)
Op = list


class Fatal(Exception):
    """A store failure that waiting will not cure; the message is the one line to show."""


class Outbox:
    def __init__(
        self,
        engine: Engine,
        sweep_id: int,
        *,
        wait_s: float = 600.0,
        spill_path: str | os.PathLike | None = None,
        memory_ops: int = MEMORY_OPS,
        on_fatal: Callable[[str], None] | None = None,
    ):
        self.sweep_id = sweep_id
        self.wait_s = wait_s
        self.spill_path = Path(spill_path) if spill_path else None
        self.memory_ops = memory_ops
        self.on_fatal = on_fatal
        self.trial_ids: dict[str, int] = {}  # Ray's trial id -> trials.id
        self.fatal: str | None = None
        self.outage_since: float | None = None
        self.last_error: str | None = None
        self._memory: deque[Op] = deque()
        self._spilled = self._count_spilled()  # waiting writes in the spill file
        self._spill_offset = 0  # bytes of the spill file already written to the database
        self._failures = 0
        self._next_try = 0.0
        self.url = engine.url
        self.engine = writer_engine(engine, SQLITE_WRITE_BUSY_MS)
        self.sqlite_file = sqlite_path(engine.url.render_as_string(hide_password=False))
        self._identity = _identity(self.sqlite_file) if self.sqlite_file else None
        self._next_space_check = 0.0
        self._writes_ok = False  # a stop that leaves the database writable (low space): the last writes go in

    # --- what the recorder and the progress line use ------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._memory) + self._spilled

    def put(self, op: Op) -> None:
        """Queue one write and try to write everything queued (unless waiting out an outage)."""
        if self.fatal is not None and not self._writes_ok:
            self._memory.append(op)  # kept for the spill file: nothing is written any more
            return
        self._memory.append(op)
        if len(self._memory) > self.memory_ops:
            try:
                self._spill()
            except Fatal:
                return
        self.flush()

    def flush(self, *, force: bool = False) -> bool:
        """Write what waits, unless the next retry is not due yet; True when nothing waits."""
        if self.fatal is not None and not self._writes_ok:
            return False
        if not self.waiting:
            return True
        if not force and time.monotonic() < self._next_try:
            return False
        try:
            self._check_identity()
            self._drain()
        except Fatal as exc:
            self._fail(str(exc))
            return False
        except WRITE_ERRORS as exc:
            return self._outage(exc)
        if self.outage_since is not None:
            self.outage_since = None
        self._failures, self._next_try, self.last_error = 0, 0.0, None
        return True

    def check_space(self) -> None:
        """Stop before a filesystem fills: the results directory's (checkpoints, Tune's state,
        the spill file) and a SQLite database's. A full one would fail trials and writes in ways
        that are hard to tell apart from others; a clean stop now leaves everything resumable."""
        now = time.monotonic()
        if self.fatal is not None or now < self._next_space_check:
            return
        self._next_space_check = now + SPACE_CHECK_S
        places = []
        if self.spill_path is not None:
            places.append(("results directory", self.spill_path.parent))
        if self.sqlite_file is not None:
            places.append((f"database {redact(self.url)}", self.sqlite_file.parent))
        for what, path in places:
            free = _free_bytes(path)
            if free is not None and free < MIN_FREE_BYTES:
                self._fail(f"the filesystem {_mount_point(path)} (of the {what}) is full: {free / 2**20:.0f} MiB "
                           f"free, resweep stops below {MIN_FREE_BYTES // 2**20} MiB; free space on it",
                           writes_ok=True)
                return

    def wait_until_written(self) -> bool:
        """Block, retrying, until everything is written (True) or the wait ends fatally (False):
        the experiment's end, when no further step of Tune's would retry."""
        while not self.flush():
            if self.fatal is not None and (not self._writes_ok or self.outage_since is not None):
                return False
            time.sleep(max(0.05, self._next_try - time.monotonic()))
        return True

    def note(self) -> str | None:
        """What the progress line says about the database while writes wait, else None."""
        if self.fatal is not None:
            return f"database writes stopped, {self.waiting} results kept in {self.spill_path or 'memory'}"
        if self.outage_since is None:
            return None
        since = time.monotonic() - self.outage_since
        n = self.waiting
        return f"database unreachable for {since:.0f}s, {n} result{'s' if n != 1 else ''} waiting"

    def persist(self) -> None:
        """Put every write still waiting into the spill file (the sweep is stopping)."""
        if self._memory and self.spill_path is not None:
            try:
                self._spill()
            except Fatal:
                pass  # the results directory is full too: Tune's result files are all that remain

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()

    # --- failures ----------------------------------------------------------------------------

    def _fail(self, line: str, *, writes_ok: bool = False) -> None:
        if self.fatal is None:
            self.fatal = line
            self._writes_ok = writes_ok
            if self.on_fatal is not None:
                self.on_fatal(line)

    def _outage(self, exc: BaseException) -> bool:
        kind, what = classify(exc)
        where = redact(self.url)
        if kind == "full":
            place = f"the filesystem {_mount_point(self.sqlite_file.parent)}" if self.sqlite_file else "the filesystem"
            self._fail(f"{place} of the database {where} is full ({what}); free space on it")
            return False
        if kind == "gone":
            self._fail(f"the database {where} is gone ({what})")
            return False
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
        self.last_error = what
        if now - self.outage_since >= self.wait_s:
            self._fail(f"the database {where} stayed unreachable for {now - self.outage_since:.0f} s "
                       f"(--db-wait {self.wait_s:g}s): {what}")
            return False
        self._next_try = now + BACKOFF_S[min(self._failures, len(BACKOFF_S) - 1)]
        self._failures += 1
        return False

    def _check_identity(self) -> None:
        """SQLite: the path must still name the file opened at the start (an open file that was
        deleted takes writes silently, and they are lost with it)."""
        if self.sqlite_file is None:
            return
        now = _identity(self.sqlite_file)
        if now is None:
            raise Fatal(f"the database file {self.sqlite_file} was deleted while the sweep ran")
        if now != self._identity:
            raise Fatal(f"the database file {self.sqlite_file} was replaced by another file while the sweep ran")

    # --- writing -------------------------------------------------------------------------------

    def _drain(self) -> None:
        if self._spilled:
            self._drain_spill()
        while self._memory:
            batch = self._take(self._memory)
            self._write(batch)
            for _ in batch:
                self._memory.popleft()

    def _drain_spill(self) -> None:
        assert self.spill_path is not None
        with open(self.spill_path, "rb") as f:
            f.seek(self._spill_offset)
            while True:
                lines = []
                for line in f:
                    lines.append(line)
                    if len(lines) >= BATCH:
                        break
                if not lines:
                    break
                ops = [json.loads(line) for line in lines if line.strip()]
                # A sweep's status in the file is a stopped run's last word; this run says its own.
                self._write([op for op in ops if op[0] != "sweep"])
                self._spill_offset += sum(len(line) for line in lines)
                self._spilled -= len(ops)
        self.spill_path.unlink()
        self._spilled, self._spill_offset = 0, 0

    @staticmethod
    def _take(queue: deque[Op]) -> list[Op]:
        """The next writes to make at once: a run of results (one transaction), or one other."""
        batch = [queue[0]]
        if queue[0][0] == "result":
            for op in list(queue)[1:BATCH]:
                if op[0] != "result":
                    break
                batch.append(op)
        return batch

    def _write(self, ops: list[Op]) -> None:
        results = []
        for op in ops:
            kind = op[0]
            if kind == "result":
                _, key, config, epoch, metrics, layers = op
                results.append(writes.Result(self._trial_id(key, config), epoch, metrics, layers))
            elif kind == "trial":
                _, key, config, status = op
                self.trial_ids[key] = writes.upsert_trial(self.engine, self.sweep_id, key, status=status,
                                                          config=config)
            elif kind == "status":
                _, key, config, status, error, ended = op
                writes.set_trial_status(self.engine, self._trial_id(key, config, status), status,
                                        error=error, ended=ended)
            elif kind == "attempt_start":
                _, key, config = op
                attempts.start_attempt(self.engine, self._trial_id(key, config))
            elif kind == "attempt_host":
                _, key, config, node_ip, hostname = op
                attempts.set_host(self.engine, self._trial_id(key, config), node_ip, hostname)
            elif kind == "attempt_end":
                _, key, config, error, node_ip, hostname = op
                attempts.end_attempt(self.engine, self._trial_id(key, config), error=error, node_ip=node_ip,
                                     hostname=hostname)
            elif kind == "checkpoint":
                _, key, config, uri = op
                writes.set_checkpoint_uri(self.engine, self._trial_id(key, config), uri)
            elif kind == "sweep":
                _, status, finished = op
                writes.set_sweep_status(self.engine, self.sweep_id, status, finished=finished)
            else:
                raise ValueError(f"unknown outbox write {kind!r}")
        if results:
            writes.record_results(self.engine, results)

    def _trial_id(self, key: str, config: dict, status: str = "running") -> int:
        if key not in self.trial_ids:
            self.trial_ids[key] = writes.upsert_trial(self.engine, self.sweep_id, key, status=status, config=config)
        return self.trial_ids[key]

    # --- the spill file --------------------------------------------------------------------------

    def _count_spilled(self) -> int:
        if self.spill_path is None or not self.spill_path.exists():
            return 0
        with open(self.spill_path, "rb") as f:
            return sum(1 for line in f if line.strip())

    def _spill(self) -> None:
        if self.spill_path is None:
            return  # no results directory of our own (tests): memory only
        try:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spill_path, "a", encoding="utf-8") as f:
                for op in self._memory:
                    f.write(json.dumps(op, default=_jsonable, allow_nan=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            full = exc.errno == 28  # ENOSPC
            what = (f"the filesystem {_mount_point(self.spill_path.parent)} (of the results directory) is full"
                    if full else f"cannot write {self.spill_path} ({exc.strerror or exc})")
            self._fail(what)
            raise Fatal(what) from None
        self._spilled += len(self._memory)
        self._memory.clear()


def classify(exc: BaseException) -> tuple[str, str]:
    """("full" | "gone" | "outage", the driver's first line) for a failed write."""
    orig = exc
    for _ in range(4):  # StoreError <- sqlalchemy error <- driver error
        inner = getattr(orig, "orig", None) or orig.__cause__
        if inner is None:
            break
        orig = inner
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    lower = text.lower()
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in PG_FULL or "disk is full" in lower or "no space left" in lower:
        return "full", text
    if sqlstate in PG_GONE or "no such table" in lower or ("database" in lower and "does not exist" in lower):
        return "gone", text
    return "outage", text


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):  # the results directory may not exist yet
        try:
            return shutil.disk_usage(p).free
        except FileNotFoundError:
            continue
    return None


def _mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (the name a user finds in `df`)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _jsonable(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
