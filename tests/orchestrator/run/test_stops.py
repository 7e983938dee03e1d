"""Stopping a grid sweep through the real command line on a real local Ray, then resuming it.

Ctrl-C (SIGINT) and SIGTERM must leave the sweep `interrupted`, its unfinished trials `pending`
and the grid points Tune never started counted; `resume` must then finish every trial, each with
every epoch recorded. On shutdown Ray Tune marks its live trials TERMINATED before the callbacks'
on_experiment_end, so a recorder that trusted Tune's statuses would call such a sweep finished.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.orchestrator.conftest import REPO, run_cli, start_cli, wait_for
from tests.orchestrator.run.test_sweeps_e2e import count, rows, sweep_file


def ray_test(test):
    """A test that runs sweeps on the real local Ray (slow)."""
    return pytest.mark.ray(pytest.mark.slow(test))

EPOCHS = 3
GRID = 4  # shortcut x seed below


def grid_sweep(tmp_path: Path, name: str) -> Path:
    # Enough data that the sweep is still running when the test's signal lands (256 images: the
    # whole sweep once ended within the half second the test waits between polls; 4,096 leaves
    # several seconds of the grid after the results waited for, on a machine twice as fast).
    path = sweep_file(tmp_path, name, epochs=EPOCHS, image=8, num_train=4096)
    path.write_text(path.read_text().replace("seed: [0]", "seed: [0, 1]"))
    return path


def assert_every_trial_has_every_epoch(url: str, sweep: str) -> None:
    """GRID trials, each terminated, each with test_err and train_err at every epoch 1..EPOCHS."""
    trials = rows(url, "SELECT t.id, t.status, t.shortcut, t.seed FROM trials t JOIN sweeps s ON s.id = t.sweep_id "
                       "WHERE s.name = :s", s=sweep)
    assert len(trials) == GRID and {(t[2], t[3]) for t in trials} == {(c, s) for c in ("none", "A") for s in (0, 1)}
    assert {t[1] for t in trials} == {"terminated"}
    for trial_id, *_ in trials:
        for name in ("train_err", "test_err"):
            epochs = [e for (e,) in rows(url, "SELECT epoch FROM metrics WHERE trial_id = :t AND name = :n "
                                              "ORDER BY epoch", t=trial_id, n=name)]
            assert epochs == list(range(1, EPOCHS + 1)), (trial_id, name, epochs)


def stop_after_results(tmp_path, ray_cluster, name: str, signals: list[int], results: int, gap: float = 0.2,
                       env: dict[str, str] | None = None):
    path = grid_sweep(tmp_path, name)
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path, env=env)
    wait_for(lambda: count(url, "SELECT count(*) FROM metrics WHERE name = 'test_err'") >= results,
             timeout=180, what=f"{results} results", proc=driver)
    for sig in signals:
        driver.send_signal(sig)
        time.sleep(gap)
    started = time.monotonic()
    out, _ = driver.communicate(timeout=120)
    return url, driver.returncode, out, time.monotonic() - started


def report(url: str, stop: str) -> None:
    """One line for the notes: the sweep's status and the epochs recorded per trial."""
    status = rows(url, "SELECT status FROM sweeps")[0][0]
    epochs = rows(url, "SELECT t.seed, t.shortcut, t.status, count(m.epoch) FROM trials t LEFT JOIN metrics m "
                       "ON m.trial_id = t.id AND m.name = 'test_err' GROUP BY t.id ORDER BY t.shortcut, t.seed")
    print(f"\n[{stop}] sweep {status}; trials {len(epochs)} of {GRID}: "
          + ", ".join(f"{sc}/{seed} {st} {n}" for seed, sc, st, n in epochs))


def assert_interrupted_and_resumable(url: str, name: str, out: str) -> None:
    report(url, f"{name} after the stop")
    assert f"python -m orchestrator resume {name} --db '{url}'" in out, out
    assert rows(url, "SELECT status, finished_at FROM sweeps") == [("interrupted", None)]
    statuses = [s for (s,) in rows(url, "SELECT status FROM trials")]
    assert "running" not in statuses
    assert statuses.count("terminated") < GRID
    assert set(statuses) <= {"terminated", "pending"} and "pending" in statuses
    ended = statuses.count("terminated")
    assert rows(url, "SELECT count(*) FROM trials WHERE status = 'pending'")[0][0] == len(statuses) - ended
    # A trial at its last epoch is terminated; no pending one reached it.
    assert count(url, "SELECT count(*) FROM trial_results WHERE status = 'pending' AND epochs >= :e", e=EPOCHS) == 0


def resume_to_the_end(tmp_path, url: str, name: str, ray_cluster) -> None:
    resumed = run_cli("resume", name, "--db", url, "--address", ray_cluster.address, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Sweep {name} finished" in resumed.stdout
    assert rows(url, "SELECT status FROM sweeps") == [("finished",)]
    report(url, f"{name} after resume")
    assert_every_trial_has_every_epoch(url, name)


@ray_test
def test_ctrl_c_on_a_grid_sweep_interrupts_it_and_resume_finishes_every_trial(tmp_path, ray_cluster):
    url, rc, out, _ = stop_after_results(tmp_path, ray_cluster, "grid-int", [signal.SIGINT], results=2)
    assert rc == 130, out
    assert_interrupted_and_resumable(url, "grid-int", out)
    ended = count(url, "SELECT count(*) FROM trials WHERE status = 'terminated'")
    assert f"{ended} of {GRID} trials ended, {GRID - ended} to continue on resume" in out
    started = count(url, "SELECT count(*) FROM trials WHERE started_at IS NOT NULL")
    assert f"({GRID - started} never started)" in out
    resume_to_the_end(tmp_path, url, "grid-int", ray_cluster)


@ray_test
def test_grid_points_tune_never_created_are_counted_and_resume_creates_them(tmp_path, ray_cluster):
    """Ray Tune creates a grid's trials only as its pending-trial limit allows; with the limit at
    one, a Ctrl-C after the first two results leaves the last grid point never created (no row,
    no trial in Tune's state). The stop counts it, and resume creates and runs it."""
    url, rc, out, _ = stop_after_results(tmp_path, ray_cluster, "grid-lazy", [signal.SIGINT], results=2,
                                         env={"TUNE_MAX_PENDING_TRIALS_PG": "1"})
    assert rc == 130, out
    created = count(url, "SELECT count(*) FROM trials")
    assert created < GRID, (created, out)
    assert_interrupted_and_resumable(url, "grid-lazy", out)
    ended = count(url, "SELECT count(*) FROM trials WHERE status = 'terminated'")
    started = count(url, "SELECT count(*) FROM trials WHERE started_at IS NOT NULL")
    assert f"{ended} of {GRID} trials ended, {GRID - ended} to continue on resume ({GRID - started} never started)" \
        in out, out
    resume_to_the_end(tmp_path, url, "grid-lazy", ray_cluster)  # every grid point, each with every epoch once


@ray_test
def test_sigterm_on_a_grid_sweep_interrupts_it_like_ctrl_c(tmp_path, ray_cluster):
    url, rc, out, _ = stop_after_results(tmp_path, ray_cluster, "grid-term", [signal.SIGTERM], results=2)
    assert rc == 143, out
    assert "Sweep grid-term interrupted" in out
    assert_interrupted_and_resumable(url, "grid-term", out)
    resume_to_the_end(tmp_path, url, "grid-term", ray_cluster)


@ray_test
@pytest.mark.parametrize("gap, codes", [(0.0, (130, 143)), (0.2, (143,))], ids=["at-once", "0.2s-apart"])
def test_a_second_signal_stops_at_once_and_the_sweep_stays_resumable(tmp_path, ray_cluster, gap, codes):
    """SIGTERM, then SIGINT: the second stops the driver at once and the sweep stays resumable.
    0.2 s apart, the SIGTERM has reached the driver first, and the exit status is its (143), even
    when Python runs the SIGINT handler first or the SIGINT comes after Tune has returned. Back to
    back, which is first is not defined: when both are pending in the kernel (the driver not
    scheduled in between, as on a loaded machine), it delivers them by number, SIGINT first."""
    url, rc, out, seconds = stop_after_results(tmp_path, ray_cluster, "grid-twice",
                                               [signal.SIGTERM, signal.SIGINT], results=2, gap=gap)
    assert rc in codes, out
    assert seconds < 30, seconds
    assert "Traceback" not in out, out
    assert_interrupted_and_resumable(url, "grid-twice", out)
    resume_to_the_end(tmp_path, url, "grid-twice", ray_cluster)


@ray_test
def test_the_kuberay_head_pods_prestop_hook_stops_a_real_driver_cleanly(tmp_path, ray_cluster, monkeypatch):
    """The manifest's preStop command, run as the kubelet would, against a real driver."""
    import subprocess

    from orchestrator.cluster import k8s

    pid_path = tmp_path / "driver.pid"
    monkeypatch.setenv("RESWEEP_PID_FILE", str(pid_path))  # the manifest sets it on the head container
    path = grid_sweep(tmp_path, "grid-pod")
    url = f"sqlite:///{tmp_path / 'resweep.db'}"
    driver = start_cli("launch", str(path), "--db", url, "--address", ray_cluster.address, cwd=tmp_path)
    wait_for(lambda: count(url, "SELECT count(*) FROM metrics WHERE name = 'test_err'") >= 1,
             timeout=180, what="a result", proc=driver)
    assert pid_path.read_text().strip() == str(driver.pid)
    hook = subprocess.run(["/bin/sh", "-c", k8s.PRE_STOP.replace(k8s.DRIVER_PID_FILE, str(pid_path))],
                          timeout=k8s.STOP_GRACE_S, capture_output=True, text=True)
    assert hook.returncode == 0, hook.stderr
    # The hook waits until the driver has exited (or is a zombie its parent has not reaped yet).
    out, _ = driver.communicate(timeout=10)
    assert driver.returncode == 143, out
    assert_interrupted_and_resumable(url, "grid-pod", out)
    assert not pid_path.exists()
    # With no driver (it has ended, or never started) the hook has nothing to do.
    assert subprocess.run(["/bin/sh", "-c", k8s.PRE_STOP.replace(k8s.DRIVER_PID_FILE, str(pid_path))],
                          timeout=10).returncode == 0


def run_child(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh Python with orchestrator.run.stops, its real signal handling."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_the_first_signal_to_arrive_is_the_first_even_when_python_runs_the_handlers_in_another_order():
    """SIGTERM, then SIGINT 0.2 s later, while the main thread is in C code that does not check for
    signals and the kernel hands them to another thread (as when the driver waits in `ray.wait`):
    Python then runs SIGINT's handler first. The first is still SIGTERM (143), Tune is asked to
    stop once, and the second signal stops at once (KeyboardInterrupt)."""
    done = run_child("""
        import os, signal, subprocess, threading, time
        from orchestrator.run.stops import STOPS
        # A thread the kernel can hand the signals to (the main thread blocks them below).
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        tune_asked = []
        STOPS.reset()
        interrupted = False
        try:
            with STOPS.handling(), STOPS.armed():
                signal.signal(signal.SIGUSR1, lambda signum, frame: tune_asked.append(signum))  # Tune's
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
                subprocess.run(["sh", "-c", f"kill -TERM {os.getpid()}; sleep 0.2; kill -INT {os.getpid()}"])
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
                for _ in range(100):
                    time.sleep(0.01)
        except KeyboardInterrupt:
            interrupted = True
        print(STOPS.first, getattr(STOPS, "arrived", "?"), tune_asked, interrupted, STOPS.exit_code)
        """)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split("\n")[0] == "15 [15, 2] [15] True 143", done.stdout + done.stderr


def test_a_signal_after_tune_has_returned_keeps_the_first_signals_exit_status():
    """A stopped sweep's driver ends with 128 + the first signal's number even if another signal
    comes while it prints its summary or shuts Ray down (it once ended 130, by Python's default
    SIGINT handler, when Tune had returned within 0.2 s of a SIGTERM); a third one ends it at once."""
    done = run_child("""
        import os, signal, sys, time
        from orchestrator.run.stops import STOPS
        STOPS.reset()
        with STOPS.handling():
            with STOPS.armed():
                signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # Tune's, which stops Tune
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGINT)  # the summary is being printed
            time.sleep(0.1)
            print("summary", STOPS.first, getattr(STOPS, "arrived", "?"), flush=True)
        os.kill(os.getpid(), signal.SIGINT)  # Ray is shutting down: a third signal ends it at once
        time.sleep(5)
        print("not reached")
        """)
    assert done.stdout.split() == ["summary", "15", "[15,", "2]"], done.stdout + done.stderr
    assert done.returncode == 143, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_signal_after_a_finished_sweep_lets_it_end_as_finished_and_a_second_ends_it_at_once():
    """No stop while Tune ran: the sweep finished. A Ctrl-C while the driver prints its summary or
    shuts Ray down (after `ending`) stops nothing and changes no exit status; once it stopped the
    summary with a KeyboardInterrupt (click's "Aborted!", exit 1). A second one ends it at once."""
    done = run_child("""
        import os, signal, sys, time
        from orchestrator.run.stops import STOPS
        STOPS.reset()
        with STOPS.handling():
            with STOPS.armed():
                pass  # Tune ran to its end
            STOPS.ending()
            os.kill(os.getpid(), signal.SIGINT)  # the summary is being printed
            time.sleep(0.1)
            print("summary", STOPS.first, STOPS.requested, flush=True)
        print("ended", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
        """)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["summary", "None", "False", "ended", "True"], done.stdout + done.stderr

    twice = run_child("""
        import os, signal, time
        from orchestrator.run.stops import STOPS
        STOPS.reset()
        with STOPS.handling():
            STOPS.ending()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
            print("not reached")
        """)
    assert (twice.returncode, twice.stdout) == (130, ""), twice.stdout + twice.stderr
    assert "Traceback" not in twice.stderr, twice.stderr


def test_a_signal_after_the_command_is_done_changes_nothing():
    """`python -m orchestrator` once done (stops.exiting, from cli.main): a stop signal is ignored,
    also through Python's own shutdown, which would otherwise restore the default action and let
    it kill the process (exit -2) after its status was decided."""
    done = run_child("""
        import atexit, os, signal, sys, time
        from orchestrator.run import stops
        print("summary", flush=True)
        stops.exiting()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))  # during the interpreter's shutdown
        print("ended", signal.getsignal(signal.SIGINT) is signal.SIG_IGN, flush=True)
        sys.exit(143)
        """)
    assert (done.returncode, done.stdout.split()) == (143, ["summary", "ended", "True"]), done.stdout + done.stderr
    assert done.stderr == "", done.stderr


def test_without_a_stop_the_previous_handlers_and_wakeup_fd_come_back():
    done = run_child("""
        import signal
        from orchestrator.run.stops import STOPS
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        with STOPS.handling():
            with STOPS.armed():
                inside = signal.getsignal(signal.SIGINT)
        print(inside == STOPS._handle, (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before,
              signal.set_wakeup_fd(-1), STOPS.first)
        """)
    assert done.stdout.split() == ["True", "True", "-1", "None"], done.stdout + done.stderr
