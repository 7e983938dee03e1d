"""A sweep as a Slurm batch job: `python -m orchestrator slurm SWEEP.yaml --nodes N ...` prints it.

The script starts a Ray head on the allocation's first node and one Ray worker on each other node
(all with `srun`, token authentication on), waits until every node has joined, runs the sweep's
driver on the head against the shared database, and stops Ray when the driver ends or the job is
cancelled, preempted or out of time. With `#SBATCH --requeue`, a job that Slurm requeues after a
preemption starts over on new nodes and the driver continues the sweep (`launch --resume`).

Stops: Slurm sends SIGTERM to every process of a job it cancels, requeues or times out (and, with
`--signal=B:TERM@120`, to the script alone two minutes before the time limit). The driver ignores
SIGTERM; the script's trap sends it SIGINT, so it stops as on Ctrl-C and the sweep reads
`interrupted`, never `failed`, until a requeued or resubmitted job (`RESWEEP_RESUME=1 sbatch`)
continues it. The Ray head's port is one found free on the head (or $RESWEEP_RAY_PORT, refused in
one line when taken or inside Ray's worker port range 10002-19999); each node's Ray lives in a temp
dir of the job's own, removed when it stops.

The script assumes what a Slurm cluster for such work has: the project directory on a shared
filesystem, the same Python environment (with resweep's dependencies) on every node, and
`python` and `ray` on the PATH (`RESWEEP_PYTHON` / `RESWEEP_RAY` override them).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from string import Template

from orchestrator.cluster.remote_sweep import PROJECT_DIR, RemoteSweep
from orchestrator.run.storage import shown
from resweep.errors import UserError

SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")


class _Script(Template):
    # `$` belongs to bash; the template's own placeholders are @@{name}.
    delimiter = "@@"


@dataclass(frozen=True)
class SlurmOptions:
    nodes: int
    gpus_per_node: int
    partition: str | None = None
    time: str | None = None  # Slurm's time format: MM, HH:MM:SS, D-HH[:MM[:SS]]
    account: str | None = None
    cpus_per_node: int | None = None  # None: whole nodes (--exclusive)
    results: str | None = None  # Tune's results; None: $PROJECT_DIR/results, on the shared project directory

    def check(self) -> None:
        if self.nodes < 1:
            raise UserError(f"--nodes {self.nodes}: a job needs at least one node (allowed: 1 or more)")
        if self.gpus_per_node < 0:
            raise UserError(f"--gpus-per-node {self.gpus_per_node}: cannot be negative (allowed: 0 or more)")
        if self.cpus_per_node is not None and self.cpus_per_node < 1:
            raise UserError(f"--cpus-per-node {self.cpus_per_node}: allowed: 1 or more")
        if self.time is not None and not SLURM_TIME.match(self.time):
            raise UserError(f"--time {self.time}: not a Slurm time limit (allowed: MINUTES, HH:MM:SS, D-HH:MM:SS)")
        for flag, value in (("--partition", self.partition), ("--account", self.account)):
            if value is not None and not re.fullmatch(r"[A-Za-z0-9_.,:+-]+", value):
                raise UserError(f"{flag} {value!r}: not a Slurm {flag[2:]} name")


def render(sweep: RemoteSweep, opts: SlurmOptions) -> str:
    """The sbatch script for `sweep` on the allocation `opts` describes."""
    opts.check()
    directives = [f"#SBATCH --nodes={opts.nodes}", "#SBATCH --ntasks-per-node=1"]
    if opts.gpus_per_node:
        directives.append(f"#SBATCH --gpus-per-node={opts.gpus_per_node}")
    directives.append(f"#SBATCH --cpus-per-task={opts.cpus_per_node}" if opts.cpus_per_node else "#SBATCH --exclusive")
    for flag, value in (("partition", opts.partition), ("time", opts.time), ("account", opts.account)):
        if value:
            directives.append(f"#SBATCH --{flag}={value}")
    name = sweep.spec.name
    return _Script(SCRIPT).substitute(
        name=name,
        nodes=opts.nodes,
        gpus=opts.gpus_per_node,
        directives="\n".join(directives),
        project_dir=shlex.quote(str(PROJECT_DIR)),
        sweep=shlex.quote(str(sweep.path)),
        db_url=shlex.quote(sweep.db_url),
        db_shown=sweep.db_shown.replace("\n", " "),
        results=shlex.quote(opts.results) if opts.results else '"$PROJECT_DIR/results"',
        results_shown=(shown(opts.results).replace("\n", " ") if opts.results
                       else "the project directory's results/ (every node shares the project directory)"),
    )


SCRIPT = r"""#!/bin/bash
# resweep sweep '@@{name}' on @@{nodes} node(s) with @@{gpus} GPU(s) each, results in @@{db_shown}.
# Written by `python -m orchestrator slurm`; submit it with `sbatch THIS_FILE`.
# Tune's state and checkpoints: @@{results_shown}.
#SBATCH --job-name=resweep-@@{name}
@@{directives}
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=resweep-@@{name}-%j.out
#SBATCH --signal=B:TERM@120

# A requeued job (preemption, node failure, `scontrol requeue`) runs this script again from the top
# on new nodes, with the same job id: Ray is started afresh and the sweep continues (--resume).
# A stop (time limit, scancel, requeue) reaches the driver only through this script's trap, as
# SIGINT: the driver ignores SIGTERM, which Slurm sends to every process of the job.
set -euo pipefail

PROJECT_DIR=@@{project_dir}
SWEEP=@@{sweep}
DB_URL=@@{db_url}
RESULTS=@@{results}
PYTHON=${RESWEEP_PYTHON:-python}
RAY=${RESWEEP_RAY:-ray}
WAIT_S=${RESWEEP_WAIT_S:-300}
RUN_DIR=${RESWEEP_RUN_DIR:-$PROJECT_DIR/.resweep/slurm-$SLURM_JOB_ID}
# Each node's Ray keeps its sockets, logs and current-cluster file in a directory of this job's own
# (short: socket paths are limited), removed when the node's Ray stops; never in /tmp/ray, where a
# plain ray.init() elsewhere would find this job's cluster after it is gone.
export RESWEEP_RAY_TMP=${RESWEEP_RAY_TMP:-/tmp/resweep-ray-$SLURM_JOB_ID}
export RAY

say() { echo "resweep[$SLURM_JOB_ID]: $*"; }

cd "$PROJECT_DIR"
umask 077
mkdir -p "$RUN_DIR"

# Token authentication: a fresh random token per job in a 0600 file on the shared filesystem.
# Every Ray process and the driver read it through RAY_AUTH_TOKEN_PATH (srun passes the
# environment on); the token itself is in no environment and no log.
unset RAY_AUTH_TOKEN RAY_ADDRESS
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH="$RUN_DIR/ray_auth_token"
if [ ! -s "$RAY_AUTH_TOKEN_PATH" ]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RAY_AUTH_TOKEN_PATH.new"
  mv "$RAY_AUTH_TOKEN_PATH.new" "$RAY_AUTH_TOKEN_PATH"
fi
chmod 600 "$RAY_AUTH_TOKEN_PATH"

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
NUM_NODES=${#NODES[@]}
HEAD_NODE=${NODES[0]}
WORKER_NODES=("${NODES[@]:1}")
HEAD_IP=$(srun --nodes=1 --ntasks=1 -w "$HEAD_NODE" hostname --ip-address | awk '{print $1}')
# Each Ray step takes its whole share of a node; Slurm would otherwise give a step one CPU per task.
CPUS=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-$(nproc)}}

# The head's port: $RESWEEP_RAY_PORT if given, else one the head's kernel says is free. Not 6379
# (any Redis on the node has it) and never in Ray's worker port range, which Ray hands to its
# worker processes (the head would collide with one of them).
RAY_PORT=$(srun --nodes=1 --ntasks=1 -w "$HEAD_NODE" "$PYTHON" -c '
import socket, sys
ip, want = sys.argv[1], sys.argv[2]
if want and not (want.isdigit() and 0 < int(want) < 65536):
    sys.exit(f"RESWEEP_RAY_PORT={want}: not a port number (allowed: 1-65535 outside 10002-19999)")
if want and 10002 <= int(want) <= 19999:
    sys.exit(f"RESWEEP_RAY_PORT={want}: inside the port range Ray gives its workers (10002-19999); pick one outside it")
for _ in range(100):  # a free port (the kernel picks), outside the range of Ray workers
    s = socket.socket()
    try:
        s.bind((ip, int(want or 0)))
    except OSError as exc:
        sys.exit(f"RESWEEP_RAY_PORT={want}: taken on {socket.gethostname()} ({exc.strerror}); pick another, or leave it unset for a free one")
    port = s.getsockname()[1]
    s.close()
    if want or not 10002 <= port <= 19999:
        print(port)
        break
else:
    sys.exit(f"no free port outside 10002-19999 on {socket.gethostname()}; set RESWEEP_RAY_PORT")
' "$HEAD_IP" "${RESWEEP_RAY_PORT:-}") || exit 2
HEAD_ADDRESS="$HEAD_IP:$RAY_PORT"

# One Ray node per task: `ray start --block` in a temp dir named after the node; on SIGTERM (the
# script ending the step, or Slurm ending the job) it stops that node's Ray and removes the dir.
RAY_NODE='tmp="$RESWEEP_RAY_TMP-${SLURMD_NODENAME:-$(hostname)}"
rm -rf "$tmp"  # an earlier run of this job id (requeued) that Slurm killed before it could clean up
"$RAY" start --block --temp-dir="$tmp" "$@" & pid=$!
trap "kill -TERM $pid 2>/dev/null" TERM INT
wait $pid || true; wait $pid 2>/dev/null || true
rm -rf "$tmp"'

HEAD_PID=
WORKERS_PID=
DRIVER_PID=

stop_ray() {
  local status=$?
  trap - EXIT TERM INT
  say "stopping Ray on $NUM_NODES node(s)"
  # Ending an srun step ends its `ray start --block`, which shuts its node's Ray down.
  for pid in $WORKERS_PID $HEAD_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  # Each node's step removes its Ray temp dir; where Slurm killed a step first, remove it here.
  rm -rf "$RESWEEP_RAY_TMP-${SLURMD_NODENAME:-$(hostname)}"
  if [ "$NUM_NODES" -gt 1 ]; then
    timeout 30 srun --nodes=$((NUM_NODES - 1)) --ntasks=$((NUM_NODES - 1)) -w "$(IFS=,; echo "${WORKER_NODES[*]}")" \
      bash -c 'rm -rf "$RESWEEP_RAY_TMP-${SLURMD_NODENAME:-$(hostname)}"' >/dev/null 2>&1 || true
  fi
  say "Ray stopped"
  exit "$status"
}

stop_sweep() {
  # Cancelled, preempted, requeued or out of time: the driver stops as on Ctrl-C (Tune saves the
  # experiment's state, the sweep is marked interrupted), so that a requeued job or a resubmitted
  # one (RESWEEP_RESUME=1 sbatch ...) continues from there.
  say "stop signal: letting the sweep save its state"
  if [ -n "$DRIVER_PID" ]; then
    kill -INT "$DRIVER_PID" 2>/dev/null || true
    wait "$DRIVER_PID" 2>/dev/null || true
  fi
  exit 143
}

trap stop_ray EXIT
trap stop_sweep TERM INT

say "Ray head on $HEAD_NODE ($HEAD_ADDRESS)"
srun --nodes=1 --ntasks=1 --cpus-per-task="$CPUS" -w "$HEAD_NODE" bash -c "$RAY_NODE" ray-head \
  --head --node-ip-address="$HEAD_IP" --port="$RAY_PORT" --num-cpus="$CPUS" --num-gpus=@@{gpus} --disable-usage-stats --include-dashboard=false &
HEAD_PID=$!

waited=0
until "$RAY" status --address="$HEAD_ADDRESS" >/dev/null 2>&1; do
  if [ "$waited" -ge "$WAIT_S" ]; then
    say "the Ray head did not come up within ${WAIT_S}s; see the lines above" >&2
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done

if [ "$NUM_NODES" -gt 1 ]; then
  say "Ray workers on ${WORKER_NODES[*]}"
  srun --nodes=$((NUM_NODES - 1)) --ntasks=$((NUM_NODES - 1)) --cpus-per-task="$CPUS" \
    -w "$(IFS=,; echo "${WORKER_NODES[*]}")" bash -c "$RAY_NODE" ray-worker \
    --address="$HEAD_ADDRESS" --num-cpus="$CPUS" --num-gpus=@@{gpus} --disable-usage-stats &
  WORKERS_PID=$!
fi

"$PYTHON" - "$HEAD_ADDRESS" "$NUM_NODES" "$WAIT_S" <<'WAIT_FOR_NODES'
import sys, time
import ray

address, want, wait_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + wait_s
while (alive := sum(1 for n in ray.nodes() if n["Alive"])) < want:
    if time.monotonic() > deadline:
        sys.exit(f"resweep: only {alive} of {want} Ray nodes joined within {wait_s:.0f}s")
    time.sleep(2)
print(f"resweep: all {alive} Ray nodes are up")
WAIT_FOR_NODES

# A rerun of this job (requeued, or RESWEEP_RESUME set) continues the sweep if an earlier run got as
# far as registering it in the database; otherwise it starts it.
RESUME=
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] || [ -e "$RUN_DIR/launched" ] || [ -n "${RESWEEP_RESUME:-}" ]; then
  if "$PYTHON" -m orchestrator status @@{name} --db "$DB_URL" >/dev/null 2>&1; then
    RESUME=--resume
    say "continuing sweep '@@{name}' (restart ${SLURM_RESTART_COUNT:-0})"
  else
    say "sweep '@@{name}' is not in the database yet: starting it"
  fi
fi
touch "$RUN_DIR/launched"

# The driver runs in the background so that a stop signal reaches the trap at once. It starts with
# SIGTERM ignored (and keeps ignoring it, see orchestrator/run/stops.py), so that Slurm's job-wide
# SIGTERM does not cut it short; `trap - INT` undoes bash's ignoring SIGINT in background jobs, so
# that the trap's SIGINT stops it.
( trap '' TERM; trap - INT; exec "$PYTHON" -m orchestrator launch "$SWEEP" --db "$DB_URL" --address "$HEAD_ADDRESS" --results "$RESULTS" $RESUME ) &
DRIVER_PID=$!
wait "$DRIVER_PID"
"""
