"""Stop signals on the driver: Ctrl-C (SIGINT) and SIGTERM end a sweep alike, and cleanly.

The first SIGINT or SIGTERM during `Tuner.fit` asks Ray Tune to stop the way its own Ctrl-C
handler does (Tune saves the experiment state, stops the trials and ends the experiment), so the
recorder can mark the sweep interrupted and a resume continues it. A second signal stops at once
(KeyboardInterrupt); Tune's periodic experiment state is on disk, so the sweep stays resumable.
The exit status is 128 + the first signal's number: 130 for SIGINT, 143 for SIGTERM. "First" is
the first to arrive (read from Python's wakeup fd, see Stops), and a signal that comes after Tune
has returned, while the driver prints its last lines and shuts Ray down, changes neither.

Why not leave it to Ray and Tune: `ray.init` installs a SIGTERM handler that exits the process
(`sys.exit`), so a `kill`, a plain `scancel` or a pod eviction would end the driver in the middle
of the experiment with a trial still `running` in the database and the sweep `failed`. Tune's own
SIGINT handler is switched off (TUNE_DISABLE_SIGINT_HANDLER) and its SIGUSR1 handler, which does
the same, is what the first signal calls.

A driver started with SIGTERM ignored keeps ignoring it, as Unix programs do (`nohup`). The Slurm
script starts it so: Slurm sends SIGTERM to every process of a job that is cancelled, requeued or
out of time, and only the script's trap, which sends the driver SIGINT, should stop the driver.

With $RESWEEP_PID_FILE set, the driver writes its PID there while it runs a sweep: the KubeRay
head pod's preStop hook reads it to stop the driver cleanly before the pod goes (orchestrator/cluster/k8s.py).

One driver per sweep (`claimed`): a launch or resume holds an exclusive lock on a file in the
sweep's results directory for as long as it runs, so a second `resume` of the same sweep, or a
second `launch` of the same new name, is refused in one line before it changes anything. The
kernel enforces the lock (flock; on NFS the server's lock manager) and releases it when the
process ends, however it ends: a killed driver leaves no stale claim. On PostgreSQL the database
holds a claim of its own too (db.writes.claim_sweep), which also guards results on object storage
from drivers on other machines.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from orchestrator.run.storage import is_uri
from resweep.errors import UserError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stops:
    """The driver's stop signals: which arrived first, and what each one does.

    Which came first is read from the order the signals arrived in, not from the order Python runs
    their handlers: a signal that lands while the main thread waits in C (Ray's `ray.wait`, which
    Tune calls all the time, or a signal that the kernel hands to another thread) runs its handler
    only when the main thread next checks for signals, and two signals pending by then run in the
    order of their numbers (SIGINT, 2, before SIGTERM, 15), whichever came first. So while the handlers are installed, Python's wakeup fd is a pipe of
    ours: its C-level signal handler writes each signal's number there the moment it arrives.
    (Two signals sent back to back to a process that did not run in between are both pending in
    the kernel, which delivers them by number too: their order is lost before any process sees it.)
    """

    def __init__(self) -> None:
        self.first: int | None = None  # the first stop signal received, if any
        self.arrived: list[int] = []  # every stop signal received, in the order they arrived
        self._on_stop: list[Callable[[], None]] = []
        self._threads: list[threading.Thread] = []
        self._armed = False  # inside Tuner.fit: the first signal asks Tune to stop
        self._acted = 0  # how many of `arrived` have been acted on
        self._unseen: dict[int, int] = {}  # handler calls not yet matched by a byte from the pipe
        self._seen: dict[int, int] = {}  # bytes from the pipe not yet matched by a handler call
        self._pipe: tuple[int, int] | None = None  # the wakeup fd's pipe, while handling
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1
        self._depth = 0
        self._late = False  # a stop signal came after the sweep had stopped, while the driver ends
        self._ending = False  # the sweep's state is settled: the driver only prints, shuts down, exits
        # Read when this module is imported, before ray.init replaces the SIGTERM handler.
        self.ignore_term = _main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN

    @property
    def requested(self) -> bool:
        return self.first is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.first or signal.SIGINT)

    def reset(self) -> None:
        self.first = None
        self.arrived.clear()
        self._acted = 0
        self._unseen.clear()
        self._seen.clear()
        self._late = False
        self._ending = False
        self._read_pipe()  # signals from before the reset are not this run's
        self._seen.clear()
        self._on_stop.clear()
        self._threads.clear()

    def on_stop(self, action: Callable[[], None]) -> None:
        """Run `action` in a thread of its own as soon as the first stop signal arrives: Slurm
        kills a job KillWait seconds (often 30) after its SIGTERM, which may be before Tune has
        stopped, so what must be recorded is recorded at once (not from inside the handler,
        which may have interrupted a database transaction of the main thread)."""
        self._on_stop.append(action)

    def join(self, timeout: float = 30) -> None:
        """Wait for the on_stop actions to be done (so that nothing they write comes later)."""
        for thread in self._threads:
            thread.join(timeout)

    def _read_pipe(self) -> list[int]:
        """The stop signals written to the wakeup pipe since it was last read, in arrival order."""
        got: list[int] = []
        if self._pipe is None:
            return got
        while True:
            try:
                data = os.read(self._pipe[0], 512)
            except (BlockingIOError, InterruptedError, OSError):
                break
            if not data:
                break
            got.extend(b for b in data if b in STOP_SIGNALS)
        return got

    def _count(self, signum: int) -> None:
        """Bring `arrived` up to date: the pipe's bytes, and this handler call, which stands for one
        arrival of `signum` whose byte is read now or was read before (by an earlier call), or,
        rarely, is not written yet (CPython sets the handler's flag a moment before it writes the
        byte, from whichever thread the kernel chose): then the call counts, and the byte will not."""
        for sig in self._read_pipe():
            if self._unseen.get(sig):
                self._unseen[sig] -= 1
            else:
                self.arrived.append(sig)
                self._seen[sig] = self._seen.get(sig, 0) + 1
        if self._seen.get(signum):
            self._seen[signum] -= 1
        else:
            self.arrived.append(signum)
            self._unseen[signum] = self._unseen.get(signum, 0) + 1

    def _handle(self, signum: int, frame: Any) -> None:
        self._count(signum)
        if self._acted >= len(self.arrived):
            return  # this call's signal was already acted on, from the pipe
        if self.first is None:
            self.first = self.arrived[0]
            for action in self._on_stop:
                thread = threading.Thread(target=action, name="resweep-stop", daemon=True)
                thread.start()
                self._threads.append(thread)
            if self._armed and hasattr(signal, "SIGUSR1"):
                self._acted = 1
                tune_stop = signal.getsignal(signal.SIGUSR1)
                if callable(tune_stop):
                    tune_stop(self.first, frame)  # Tune's interrupt handler: stop after this step, saving state
                else:  # Tune is still starting: stop it as soon as its handler is there
                    threading.Thread(target=self._stop_tune_when_ready, name="resweep-stop-tune",
                                     daemon=True).start()
                if len(self.arrived) == 1:
                    return
        self._acted = len(self.arrived)
        raise KeyboardInterrupt  # a second signal while Tune runs (or any before it does): stop at once

    def _handle_late(self, signum: int, frame: Any) -> None:
        """A stop signal once the stopped sweep's `Tuner.fit` has returned (or was cut short): the
        sweep's state is recorded, the driver is printing its last lines and ending with 128 + the
        first signal's number. One such signal lets it end; another one ends it at once."""
        self._count(signum)
        if self._acted >= len(self.arrived):
            return
        self._acted = len(self.arrived)
        if self._late:
            raise SystemExit(self.exit_code)
        self._late = True

    def ending(self) -> None:
        """Inside `handling`: the sweep's state is recorded and its Tuner has returned (or Ray is
        being shut down), so the driver only prints its last lines, shuts Ray down and exits. A stop
        signal from here on is a late one (`_handle_late`): the first lets the driver end as it
        would have, with the exit status it would have had (0 for a finished sweep: nothing was
        stopped), and another one ends it at once. Without this, a Ctrl-C in those last seconds
        stopped the summary or ray.shutdown with a KeyboardInterrupt (click's "Aborted!", exit 1)."""
        if self._pipe is None or not _main_thread():
            return
        self._ending = True
        if self.first is None:
            self._install(self._handle_late)

    def _install(self, handler: Callable[[int, Any], None]) -> None:
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, signal.SIG_IGN if self.ignore_term else handler)

    @contextmanager
    def handling(self) -> Iterator[None]:
        """SIGINT and SIGTERM handled by this object (not by Ray's exit-at-once SIGTERM handler)
        until the block ends; the previous handlers (and wakeup fd) come back after it, unless a
        stop signal came: then the driver is ending, and a later signal must neither change its
        exit status (128 + the first signal's) nor end it with a traceback, so the late handler
        stays (with the pipe, which tells it the order of what comes)."""
        if not _main_thread():
            yield
            return
        if self._depth == 0 and self._pipe is None:
            read_end, write_end = os.pipe()
            os.set_blocking(read_end, False)
            os.set_blocking(write_end, False)
            self._pipe = (read_end, write_end)
            self._previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
            self._previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._depth += 1
        self._install(self._handle)
        try:
            yield
        finally:
            self._depth -= 1
            if self.first is not None:
                self._install(self._handle_late)
            elif self._depth > 0:
                self._install(self._handle_late if self._ending else self._handle)
            else:
                self.restore()

    def restore(self) -> None:
        """The handlers and wakeup fd from before the outermost `handling` block (a caller that goes
        on after a stopped sweep, in the same process, calls it when done)."""
        if self._pipe is None or not _main_thread():
            return
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._previous_wakeup)
        for fd in self._pipe:
            os.close(fd)
        self._pipe = None
        self._ending = False

    @contextmanager
    def armed(self) -> Iterator[None]:
        """Around `Tuner.fit`: the first stop signal asks Tune to stop cleanly."""
        saved = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours handles SIGINT; Tune's would undo it
        self._armed = True
        try:
            with self.handling():
                yield
        finally:
            self._armed = False  # Tune ended (or was cut short): a later signal is a late one
            if saved is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved
            if _main_thread() and hasattr(signal, "SIGUSR1"):
                signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # Tune's handler outlives its run


@contextmanager
def pid_file() -> Iterator[None]:
    """This process's PID in $RESWEEP_PID_FILE (when set) while the block runs."""
    path = os.environ.get("RESWEEP_PID_FILE")
    if not path:
        yield
        return
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        try:
            with open(path) as f:
                mine = f.read().strip() == str(os.getpid())
            if mine:
                os.unlink(path)
        except OSError:
            pass


CLAIM_FILE = ".resweep-driver"  # in a sweep's local results directory, while a driver runs it
CLAIMS_DIR = "~/.cache/resweep/claims"  # results on object storage: a claim file per sweep here


@dataclass(frozen=True)
class Claim:
    fresh: bool  # the results directory held nothing (but the claim) when it was taken


@contextmanager
def claimed(experiment_dir: str, name: str, *, new: bool = False) -> Iterator[Claim]:
    """For the block, this process is the one driver of sweep `name`, whose results are at
    `experiment_dir` (a path, or a URI); UserError at once, in one line, if another process is.

    `new` (a launch): a local directory is made if it is not there (with its parents), and what
    was made is removed again at the end if it still holds nothing but the claim (a launch refused
    after claiming leaves nothing).
    The claim's file names the holder (pid and host) and goes when the block ends.
    For results on object storage, which has no locks, the claim's file is in this user's
    CLAIMS_DIR: it excludes drivers on this machine; PostgreSQL's claim, all of them.
    """
    remote = is_uri(experiment_dir)
    if remote:
        key = hashlib.sha256(experiment_dir.partition("?")[0].encode()).hexdigest()[:32]
        folder, made = Path(CLAIMS_DIR).expanduser(), []
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / key
    else:
        folder = Path(experiment_dir)
        made = [d for d in (folder, *folder.parents) if not d.exists()] if new else []  # innermost first
        if new:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / CLAIM_FILE
    fd = _lock(path, name)
    try:
        fresh = remote or not any(entry.name != CLAIM_FILE for entry in os.scandir(folder))
        yield Claim(fresh=fresh)
    finally:
        try:
            path.unlink()  # before the lock goes: whoever opens the path next makes a new file
        except OSError:
            pass
        os.close(fd)
        for directory in made:
            try:
                directory.rmdir()  # only if empty: nothing of the sweep was written
            except OSError:
                break


def _lock(path: Path, name: str) -> int:
    """The open descriptor of `path`, exclusively locked and naming this process; UserError if
    another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = "".join(c for c in os.pread(fd, 200, 0).decode(errors="replace").strip() if c.isprintable())
            os.close(fd)
            raise UserError(f"{name}: another resweep command is running this sweep now ({holder or 'starting'}); "
                            "wait for it to end, or stop it (Ctrl-C there) and run "
                            f"`python -m orchestrator resume {name}`") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its holder unlinked just before we locked it: ours
            try:  # who holds it, for the next one's refusal; the lock is the claim, not this text
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            except OSError:  # a full disk
                pass
            return fd
        os.close(fd)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


STOPS = Stops()


def exiting() -> None:
    """The command is done and the process exits with the status it has decided: stop signals
    are ignored from now on. Python's own shutdown puts the default action back for any
    signal with a Python handler, so a Ctrl-C arriving then killed the driver by the signal
    (exit -2) after it had printed that the sweep was interrupted with 143; an ignored signal
    survives the shutdown. (SIGKILL still ends a process that would hang here.) For the process's
    entry point only."""
    if not _main_thread():
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
