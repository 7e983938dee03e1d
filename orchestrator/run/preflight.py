"""Checks on a Ray cluster before a sweep is registered or any trial trains.

On a cluster of more than one node, one small task pinned to each alive node (0 CPUs, so it
runs even where every CPU is busy) reads a probe the driver wrote under the results location,
writes its own, which the driver then reads back, and imports resweep's code as a trial would.
Everything is removed afterwards. A node that cannot gets one line: the node, the location and
what to do. Without this, each trial would train an epoch and die at its first checkpoint
(Tune: "Unable to set up cluster storage"), or fail to import `orchestrator`, on every retry.

`launch --address` does not ship the project to the workers (`submit` does, as a job's
working_dir); it expects the nodes to have it installed, and refuses here if one does not:
see docs/cluster.md.
"""

from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.run import storage
from resweep.errors import UserError

TIMEOUT_S = 180.0  # a fresh worker process imports torch: tens of seconds on a busy node
# What a trial's worker imports: the trainable (trainers.entry.run_trial) and the trainers.
CODE_MODULES = ("trainers.entry", "trainers.trainable")
SHARED_HELP = (f"put --results on a filesystem every node mounts at the same path, or use {storage.OBJECT_STORE_HELP}")
CODE_HELP = ("install the project on every node (the same checkout and `pip install -e .` as on this one), "
             "or run the sweep with `python -m orchestrator submit`, which ships the code")


@dataclass(frozen=True)
class NodeReport:
    node_id: str
    ip: str
    hostname: str
    storage_error: str | None
    code_error: str | None
    ran: bool = True  # False: the probe never ran there, so it wrote nothing to read back

    @property
    def name(self) -> str:
        return f"node {self.hostname} ({self.ip})"


def _probe(probe_dir: str, secret: str, node_id: str, modules: tuple[str, ...]) -> dict[str, Any]:
    """Runs on one node. Defined at module level but shipped by value (see `check`), so that a
    node without resweep's code can still run it and say so."""
    import importlib
    import socket
    import traceback

    import ray

    report: dict[str, Any] = {"ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
                              "storage_error": None, "code_error": None}
    try:
        import pyarrow.fs as pafs

        if "://" in probe_dir:
            fs, path = pafs.FileSystem.from_uri(probe_dir)
        else:
            fs, path = pafs.LocalFileSystem(), probe_dir
        try:
            with fs.open_input_stream(f"{path}/driver") as f:
                seen = f.read().decode()
        except FileNotFoundError:
            seen = None
        if seen != secret:
            report["storage_error"] = ("cannot see what the driver wrote there" if seen is None
                                       else "sees other content there than the driver wrote")
        else:
            mine = f"{path}/node-{node_id}"
            with fs.open_output_stream(mine) as f:
                f.write(f"{secret}:{node_id}".encode())
            with fs.open_input_stream(mine) as f:
                if f.read().decode() != f"{secret}:{node_id}":
                    report["storage_error"] = "wrote a probe there and read back something else"
    except Exception as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        report["storage_error"] = f"cannot write there ({(lines[0] if lines else type(exc).__name__)[:200]})"
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            report["code_error"] = f"{type(exc).__name__}: {exc}"[:200]
            break
        except BaseException:
            report["code_error"] = traceback.format_exc(limit=1)[-200:]
            break
    return report


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check(location: str, *, timeout_s: float = TIMEOUT_S) -> list[NodeReport]:
    """Probe every alive node of the joined Ray cluster (see the module docstring); UserError
    with one line per failing node. A one-node cluster is not probed (its disk is the driver's).
    Returns the reports (empty for one node)."""
    import cloudpickle
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes()
    if len(nodes) <= 1:
        return []
    fs, root = storage.filesystem(location)
    probe_name = f".resweep-preflight-{secrets.token_hex(6)}"
    probe_dir = storage.join(location, probe_name)
    probe_path = storage.join(root, probe_name)
    secret = secrets.token_hex(16)
    made_root = not storage.is_uri(location) and not storage.exists(location)
    try:
        fs.create_dir(probe_path, recursive=True)
        with fs.open_output_stream(f"{probe_path}/driver") as f:
            f.write(secret.encode())
    except Exception as exc:
        _remove(fs, probe_path, root if made_root else None)
        raise UserError(f"--results {storage.shown(location)}: this machine cannot write there ({storage.first_line(exc)}); "
                        f"give a location it can write, e.g. {storage.OBJECT_STORE_HELP}") from None
    # By value: a node lacking resweep's code must still be able to run the probe.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
        refs = {
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                probe_dir, secret, n["NodeID"], CODE_MODULES): n
            for n in nodes
        }
        reports = _gather(refs, timeout_s)
        for r in reports:  # what each node wrote, read back here
            if r.ran and r.storage_error is None and not _reads(fs, f"{probe_path}/node-{r.node_id}", f"{secret}:{r.node_id}"):
                reports[reports.index(r)] = NodeReport(r.node_id, r.ip, r.hostname,
                                                       "wrote a probe there that the driver cannot read back",
                                                       r.code_error)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        _remove(fs, probe_path, root if made_root else None)
    lines = []
    for r in reports:
        if r.storage_error:
            lines.append(f"{r.name}: {r.storage_error} at --results {storage.shown(location)}; {SHARED_HELP}")
        if r.code_error:
            lines.append(f"{r.name}: cannot import resweep's code ({r.code_error}); {CODE_HELP}")
    if lines:
        raise UserError("\n".join(lines))
    return reports


def _gather(refs: dict, timeout_s: float) -> list[NodeReport]:
    import ray

    deadline = time.monotonic() + timeout_s
    reports = []
    for ref, node in refs.items():
        ip = node.get("NodeManagerAddress", "?")
        hostname = node.get("NodeManagerHostname", ip)
        try:
            got = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            reports.append(NodeReport(node["NodeID"], ip, hostname, None,
                                      f"no answer from the node's probe within {timeout_s:.0f} s", ran=False))
            continue
        except Exception as exc:  # the node died, could not start a worker, or could not load the probe
            # On a node without the project the probe cannot even be loaded there: Ray's error then
            # ends in the ModuleNotFoundError (its first line is only the task's header).
            last = _last_line(exc)
            reason = last if last.startswith(("ModuleNotFoundError", "ImportError")) else f"its probe task failed: {last}"
            reports.append(NodeReport(node["NodeID"], ip, hostname, None, reason, ran=False))
            continue
        reports.append(NodeReport(node["NodeID"], got["ip"], got["hostname"], got["storage_error"],
                                  got["code_error"]))
    return reports


def _last_line(exc: BaseException) -> str:
    """A Ray task error's own exception: the last line of its text (the first is only its header)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _reads(fs: Any, path: str, expected: str) -> bool:
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode() == expected
    except Exception:
        return False


def _remove(fs: Any, probe_path: str, made_root: str | None) -> None:
    """The probe directory, and the results directory itself if the check made it."""
    for path in (probe_path, made_root):
        if path is None:
            continue
        try:
            fs.delete_dir(path)
        except Exception:
            pass
