"""The recorder's outbox: every write of a sweep's run, in order, through database outages.

The recorder turns Tune's callbacks into typed events (below) and puts them here; the outbox
writes each at once when the database answers. When it does not (a PostgreSQL restart, a SQLite
file locked by another writer), the events wait here in the order they came, and are retried
with backoff on each of Tune's steps, so trials keep training meanwhile. Past `memory_ops`
waiting events the oldest go to a spill file under the sweep's results directory, so memory
stays bounded; the spill file is written back first, and a resumed sweep's outbox writes back
what a stopped one left there. Every write is an idempotent upsert (db.writes, the only module
that writes SQL), so writing an event again after a failure half-way, or after a restart, never
duplicates a row.

The events are frozen records. A trial's flat config travels once, in its `TrialRegistered` (the
first event of each trial in a run); every later event names the trial by its key (Ray's trial
id), which the outbox maps to `trials.id` (from the registration it wrote, or from the database
for a trial a stopped run registered).

The spill file (SPILL_FILE) is JSON lines, one event a line, each with its format version:
`{"v": SPILL_VERSION, "event": "<class name>", <its fields>}`. Version 1's lines (lists by
position, each carrying the trial's config, written before the version) are read and mapped to
the events; a line of any other version, or one that is no event, is refused in one line before
the run starts.

Some failures end the wait at once and make the sweep stop cleanly (`fatal`): the database
unreachable for longer than `wait_s`, a full filesystem (the database's or the results
directory's), and a database that is gone: a SQLite path that no longer names the file that was
opened (deleted, or replaced by another file), a PostgreSQL database that was dropped, or tables
that vanished.

Events come from Tune's loop on the driver's main thread and, once, from the thread a stop signal
starts (orchestrator.run.stops): a lock keeps them in one order.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

from sqlalchemy.engine import Engine

from db import writes
from db.engine import WRITE_ERRORS, redact, sqlite_path, writer_engine
from resweep.errors import UserError

SPILL_FILE = "resweep-pending.jsonl"
SPILL_VERSION = 2  # 1: positional lists, each with the trial's config (read, mapped); 2: named events
MEMORY_OPS = 5000  # waiting events kept in memory before the oldest go to the spill file
BATCH = 500  # results written in one transaction when catching up
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # between retries; the last repeats
SQLITE_WRITE_BUSY_MS = 1000  # the recorder's own lock wait: short, so Tune's loop never stalls long
MIN_FREE_BYTES = 64 * 2**20  # below this on the database's or the results' filesystem, the sweep stops
SPACE_CHECK_S = 5.0  # how often free space is looked at
PG_GONE = {"3D000", "42P01"}  # invalid_catalog_name (database dropped), undefined_table
PG_FULL = {"53100"}  # disk_full


# --- the events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrialRegistered:
    """A trial's row with its flat config, in `status` (upserted: a registration again updates
    it). The first event of each trial in a run, and the only one that carries the config."""

    key: str
    config: Mapping[str, Any]
    status: str = "running"


@dataclass(frozen=True, slots=True)
class ResultReported:
    """One reported epoch: metrics by name (and params_count), layer records on probe epochs."""

    key: str
    epoch: int
    metrics: Mapping[str, Any]
    layer_stats: Sequence[Mapping[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class TrialStatus:
    """A trial's new status; `ended` stamps ended_at; `error` the failure's text."""

    key: str
    status: str
    error: str | None = None
    ended: bool = False


@dataclass(frozen=True, slots=True)
class CheckpointSaved:
    """Where the trial's latest checkpoint lies (a path or an object-store URI)."""

    key: str
    uri: str


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    """The trial's next attempt began (its first run, a retry, a resumed sweep's restart)."""

    key: str


@dataclass(frozen=True, slots=True)
class AttemptHost:
    """The node the trial's current attempt runs on."""

    key: str
    node_ip: str | None
    hostname: str | None


@dataclass(frozen=True, slots=True)
class AttemptEnded:
    """The trial's current attempt ended, with its error when it failed."""

    key: str
    error: str | None = None
    node_ip: str | None = None
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class SweepStatus:
    """The sweep's status: `running` when a resume starts, its verdict at the end."""

    status: str
    finished: bool = False


@dataclass(frozen=True, slots=True)
class SweepInterrupted:
    """The driver is stopping before its experiment ended: every trial the database has as
    running goes back to pending (terminated when all `epochs` are recorded), the sweep reads
    interrupted. Written as the database sees the trials then, so it needs no read first."""

    epochs: int


Event = Union[TrialRegistered, ResultReported, TrialStatus, CheckpointSaved, AttemptStarted, AttemptHost,
              AttemptEnded, SweepStatus, SweepInterrupted]
EVENTS: dict[str, type] = {cls.__name__: cls for cls in Event.__args__}
SWEEP_EVENTS = (SweepStatus, SweepInterrupted)  # a stopped run's word on the sweep: not replayed
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENTS.values()}
# Version 1's lists: kind -> the event, after the trial's key and config (the sweep's has neither).
_V1 = {"trial": TrialRegistered, "result": ResultReported, "status": TrialStatus, "checkpoint": CheckpointSaved,
       "attempt_start": AttemptStarted, "attempt_host": AttemptHost, "attempt_end": AttemptEnded}


class SpillError(UserError):
    """A spill file this resweep cannot read: one line, with what to do."""


class Fatal(Exception):
    """A store failure that waiting will not cure; the message is the one line to show."""


class Outbox:
    """The events of one sweep's run, written in order (see the module docstring)."""

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
        self._memory: deque[Event] = deque()
        self._configs: dict[str, Mapping[str, Any]] = {}  # trial configs met in a version-1 spill file
        self._lock = threading.RLock()
        self._spilled = self._count_spilled()  # waiting events in the spill file; refuses one it cannot read
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

    def put(self, event: Event) -> None:
        """Queue one event and try to write everything queued (unless waiting out an outage)."""
        with self._lock:
            self._memory.append(event)
            if self.fatal is not None and not self._writes_ok:
                return  # kept for the spill file: nothing is written any more
            if len(self._memory) > self.memory_ops:
                try:
                    self._spill()
                except Fatal:
                    return
            self._flush(False)

    def flush(self, *, force: bool = False) -> bool:
        """Write what waits, unless the next retry is not due yet; True when nothing waits."""
        with self._lock:
            return self._flush(force)

    def _flush(self, force: bool) -> bool:
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
        """Put every event still waiting into the spill file (the sweep is stopping)."""
        with self._lock:
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
            lineno = self._spill_lines
            while True:
                lines = []
                for line in f:
                    lines.append(line)
                    if len(lines) >= BATCH:
                        break
                if not lines:
                    break
                events = [e for i, line in enumerate(lines, lineno + 1)
                          if (e := self._decode(line, i)) is not None]  # fmt: skip
                # A sweep's status in the file is a stopped run's last word; this run says its own.
                self._write([e for e in events if not isinstance(e, SWEEP_EVENTS)])
                self._spill_offset += sum(len(line) for line in lines)
                self._spill_lines = lineno = lineno + len(lines)
                self._spilled -= len(events)
        self.spill_path.unlink()
        self._spilled, self._spill_offset, self._spill_lines = 0, 0, 0

    @staticmethod
    def _take(queue: deque[Event]) -> list[Event]:
        """The next events to write at once: a run of results (one transaction), or one other."""
        batch = [queue[0]]
        if type(queue[0]) is ResultReported:
            for event in itertools.islice(queue, 1, BATCH):
                if type(event) is not ResultReported:
                    break
                batch.append(event)
        return batch

    def _write(self, events: list[Event]) -> None:
        results = []
        engine = self.engine
        for e in events:
            kind = type(e)
            if kind is ResultReported:
                results.append(writes.Result(self._trial_id(e.key), e.epoch, e.metrics, e.layer_stats))
            elif kind is TrialRegistered:
                self.trial_ids[e.key] = writes.upsert_trial(engine, self.sweep_id, e.key, status=e.status,
                                                            config=e.config)
            elif kind is TrialStatus:
                writes.set_trial_status(engine, self._trial_id(e.key, e.status), e.status, error=e.error,
                                        ended=e.ended)
            elif kind is AttemptStarted:
                writes.start_attempt(engine, self._trial_id(e.key))
            elif kind is AttemptHost:
                writes.set_host(engine, self._trial_id(e.key), e.node_ip, e.hostname)
            elif kind is AttemptEnded:
                writes.end_attempt(engine, self._trial_id(e.key), error=e.error, node_ip=e.node_ip,
                                     hostname=e.hostname)
            elif kind is CheckpointSaved:
                writes.set_checkpoint_uri(engine, self._trial_id(e.key), e.uri)
            elif kind is SweepStatus:
                writes.set_sweep_status(engine, self.sweep_id, e.status, finished=e.finished)
            elif kind is SweepInterrupted:
                writes.interrupt_sweep(engine, self.sweep_id, epochs=e.epochs)
            else:
                raise TypeError(f"not an outbox event: {e!r}")
        if results:
            writes.record_results(engine, results)

    def _trial_id(self, key: str, status: str = "running") -> int:
        """trials.id of the trial `key`: registered by this outbox, else by a stopped run (in
        the database), else (only a version-1 spill file's trials) registered now, in `status`."""
        trial_id = self.trial_ids.get(key)
        if trial_id is None:
            trial_id = writes.find_trial(self.engine, self.sweep_id, key)
            if trial_id is None:
                config = self._configs.get(key)
                if config is None:  # the recorder registers every trial before anything else of it
                    raise LookupError(f"an event of trial {key!r}, which was never registered")
                trial_id = writes.upsert_trial(self.engine, self.sweep_id, key, status=status, config=config)
            self.trial_ids[key] = trial_id
        return trial_id

    # --- the spill file --------------------------------------------------------------------------

    def _count_spilled(self) -> int:
        """The events waiting in the spill file; every line is read, so that a file this resweep
        cannot read is refused now, before the run starts, and not half-way through it."""
        self._spill_offset = self._spill_lines = 0  # bytes and lines of it written to the database
        if self.spill_path is None or not self.spill_path.exists():
            return 0
        with open(self.spill_path, "rb") as f:
            return sum(1 for i, line in enumerate(f, 1) if self._decode(line, i) is not None)

    def _decode(self, line: bytes, lineno: int) -> Event | None:
        """The event on one line of the spill file (None for a blank line)."""
        if not line.strip():
            return None
        try:
            record = json.loads(line)
        except ValueError:
            raise self._refused(lineno, "not JSON (a write cut short?)") from None
        if isinstance(record, list):  # version 1: [kind, key, config, *fields] or ["sweep", status, finished]
            return self._from_v1(record, lineno)
        if not isinstance(record, dict) or "v" not in record:
            raise self._refused(lineno, "not a resweep spill record")
        version = record.pop("v")
        if version != SPILL_VERSION:
            raise self._refused(lineno, f"a record of format version {version!r}; this resweep reads versions 1 "
                                        f"and {SPILL_VERSION}")
        cls = EVENTS.get(record.pop("event", None))
        try:
            return cls(**record)
        except TypeError:
            raise self._refused(lineno, "not a resweep spill record") from None

    def _from_v1(self, op: list, lineno: int) -> Event:
        """A version-1 list as its event; the trial's config it carries is kept for `_trial_id`."""
        try:
            if op[0] == "sweep":
                return SweepStatus(*op[1:])
            kind, key, config, *fields = op
            event = _V1[kind](key, config, *fields) if kind == "trial" else _V1[kind](key, *fields)
            self._configs.setdefault(key, config)
            return event
        except (KeyError, TypeError, ValueError, IndexError):
            raise self._refused(lineno, "not a resweep spill record (version 1)") from None

    def _refused(self, lineno: int, what: str) -> SpillError:
        return SpillError(f"{self.spill_path}, line {lineno}: {what}; resume with the resweep that wrote it, or "
                          "move the file away (its results are in Tune's files: `python -m orchestrator db import` "
                          "writes them)")

    def _spill(self) -> None:
        if self.spill_path is None:
            return  # no results directory of our own (tests): memory only
        try:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spill_path, "a", encoding="utf-8") as f:
                for event in self._memory:
                    f.write(_encode(event) + "\n")
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


def _encode(event: Event) -> str:
    """One line of the spill file: the event's class name and fields."""
    record = {"v": SPILL_VERSION, "event": type(event).__name__,
              **{f: getattr(event, f) for f in _FIELDS[type(event)]}}
    return json.dumps(record, default=_jsonable, allow_nan=True)


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
