"""The Ray session of a launch or resume: join the cluster at --address (with its token, if it
wants one) or start a local Ray of our own, and stop cleanly on Ctrl-C or SIGTERM.

Without --address (and $RAY_ADDRESS) the driver starts a Ray of its own, never one that an
earlier run left behind. Workers never get the database URL: it is kept out of the environment
a local Ray's processes inherit.

While `ray.init` starts or joins Ray, the modules the caller names as `warm` are imported in a
background thread: Ray's start is mostly the driver waiting on Ray's own processes, and the
Tuner's imports (Ray Tune, Train and Data) fit in that wait. `ray.init` itself must stay on the
main thread (a new local node installs a SIGTERM handler), so it is the imports that move.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import ray

from db.engine import ENV_VAR
from resweep.errors import UserError
from orchestrator.run import ray_compat
from orchestrator.run.stops import STOPS, pid_file
from orchestrator.run.token import find_token


@contextmanager
def ray_session(
    address: str | None, token_file: str | os.PathLike | None = None, *, warm: Sequence[str] = ()
) -> Iterator[bool]:
    """Ray joined or started (`start_ray`, importing `warm` meanwhile), stop signals handled and
    the driver's pid file written for the block; a Ray this started is shut down after it. Yields
    True when that is a new local Ray of this driver's own (one node, which no autoscaler grows)."""
    local = not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS"))
    started = start_ray(address, token_file, warm)
    try:
        with STOPS.handling(), pid_file():  # after ray.init, whose SIGTERM handler exits at once
            try:
                yield local
            finally:
                STOPS.ending()  # a stop signal while Ray shuts down is a late one, not a traceback
                if started:
                    stop_local_ray()
    finally:
        if started and ray.is_initialized():  # handling itself failed
            stop_local_ray()



def start_ray(address: str | None, token_file: str | os.PathLike | None = None, warm: Sequence[str] = ()) -> bool:
    """Join `address`, or start a local Ray sized to this machine, with the modules `warm` imported
    in the background meanwhile (see the module docstring); True if we started one."""
    if ray.is_initialized():
        return False
    if address is not None:
        check_reachable(address)
        if "://" not in address and address not in ("auto", "local"):
            check_token(address, token_file)
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Workers never write results (the driver does), so the database URL and its password stay
    # out of their environment: a local Ray's processes inherit this one's as ray.init finds it.
    # (A cluster joined at --address gives its workers its own nodes' environment, not ours.)
    hidden = os.environ.pop(ENV_VAR, None)
    # No address: $RAY_ADDRESS if set (a Ray Job's driver: submit, KubeRay), else a new local Ray.
    # Never ray.init()'s default, which joins whatever cluster /tmp/ray/ray_current_cluster names,
    # such as the dead one a killed Slurm job or another user's `ray start` left behind.
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    importing = import_in_background(warm)
    try:
        ray.init(address=target, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        if address is None:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--address {address}: cannot join a Ray cluster there ({first[:200]}); start one with "
                        "`ray start --head` on that machine, or leave --address out for a local Ray") from None
    finally:
        if hidden is not None:
            os.environ[ENV_VAR] = hidden
    if importing is not None:
        importing.join()  # the caller imports them next; a failed import raises there, in its thread
    return True


def import_in_background(modules: Sequence[str]) -> threading.Thread | None:
    """Import `modules` in a daemon thread (None when there are none). An import that fails there
    is left to fail again where the caller imports the module itself, with its own traceback."""
    if not modules:
        return None
    for name in ray_compat.RAY_INIT_IMPORTS:  # never imported by both threads at once
        importlib.import_module(name)

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001, S110 - raised again by the caller's own import
                pass

    thread = threading.Thread(target=run, name="resweep-warm-imports", daemon=True)
    thread.start()
    return thread


def stop_local_ray() -> None:
    """`ray.shutdown()` of the local Ray this process started, less its autoscaler's stall.

    ray.shutdown stops the node's processes one at a time, the raylet and the GCS first, each
    given a second to exit on SIGTERM. Ray's autoscaler monitor, signalled after the GCS is gone,
    spends all of its second reporting its own end to that GCS and is then killed: most of the
    shutdown's time (Ray 2.60). A single-node Ray's monitor has
    nothing to scale and nothing to save, so it is killed first; the rest is ray.shutdown's own.
    """
    for process in ray_compat.local_monitor_processes():
        if process.poll() is None:
            process.kill()
            try:
                process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass  # ray.shutdown reaps it
    ray.shutdown()


def check_reachable(address: str) -> None:
    """Refuse an address nothing listens on: ray.init would retry it for minutes."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: not HOST:PORT (e.g. 10.0.0.5:6379, or ray://10.0.0.5:10001)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(f"--address {address}: nothing answers there ({exc.strerror or exc}); start the head with "
                        "`ray start --head` on that machine, or leave --address out for a local Ray") from None


# --- a token cluster, before ray.init ---

AUTH_TIMEOUT_S = 5.0
TOKEN_HELP = ("set RAY_AUTH_TOKEN to the token, or RAY_AUTH_TOKEN_PATH to a file holding it, or pass "
              "--token-file FILE (on the head node, `ray get-auth-token` prints it)")


def check_token(address: str, token_file: str | os.PathLike | None = None) -> None:
    """Before ray.init joins a GCS at `address` (HOST:PORT): if the cluster wants a token, find
    one and make Ray send it (RAY_AUTH_MODE=token), or fail at once with one line.

    Without this, ray.init retries a refused connection for half a minute, logging a
    `gcs_client ... InvalidAuthToken` warning every second, and then advises `ray start --head`.
    One gRPC call, made without and then with the token, tells which case this is.
    """
    import grpc

    def refused(metadata: tuple = ()) -> bool:
        try:
            return ray_compat.gcs_unauthenticated(address, metadata, AUTH_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise UserError(f"--address {address}: the Ray head does not answer ({exc.code().name.lower()}); "
                            "check the address (the GCS port, 6379 by default) and that the head runs") from None

    if not refused():
        return
    token = find_token(Path(token_file) if token_file else None)
    if token is None:
        raise UserError(f"--address {address}: the Ray cluster requires a token and none was found; {TOKEN_HELP}")
    if refused((("authorization", f"Bearer {token.value}"),)):
        raise UserError(f"--address {address}: the Ray cluster refused the token from {token.source}; use that "
                        "cluster's token (on the head node, `ray get-auth-token` prints it)")
    os.environ["RAY_AUTH_MODE"] = "token"
    if token_file:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(Path(token_file).expanduser().resolve())
    ray_compat.reload_auth_settings()  # Ray read its config and cached the token when imported
