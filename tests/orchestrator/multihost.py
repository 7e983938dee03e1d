"""A real multi-host Ray cluster on one machine, for the tests: a head and two workers, each in
its own network namespace (its own IP, loopback and hostname), joined by a bridge.

    netns rsw<id>-h : bridge rswbr<id> 10.<a>.<b>.1/24, Ray head (0 CPUs: trials run on workers),
                      token auth, dashboard (Jobs API) on 10.<a>.<b>.1:8265
    netns rsw<id>-a : veth to the bridge, 10.<a>.<b>.2, Ray worker "rsw<id>-a", 1 CPU
    netns rsw<id>-b : veth to the bridge, 10.<a>.<b>.3, Ray worker "rsw<id>-b", 1 CPU; in its own
                      mount namespace a tmpfs hides `private_results` (what a node without the
                      head's disk sees: an empty directory of the same name)

With `object_store=True`, moto's S3 server (from PyPI; no real S3 can be reached from a test
machine, so moto stands in for it) runs in the head's namespace on 10.<a>.<b>.1:<port>, and every
node, driver and job gets the standard AWS_* variables for it. `start_postgres()` starts a
private PostgreSQL there too (the head node's database, as on a real cluster), reachable from
the namespaces at 10.<a>.<b>.1 and from the test process through its unix socket.

The namespaces share one disk (everything but `private_results`), so a results directory on it
is a "shared filesystem". Each node has its own --temp-dir (never /tmp/ray: a plain ray.init()
elsewhere on the machine must not find this cluster) and is ended by the PIDs in its namespace
(`ip netns pids`), never by `ray stop`, which would end every Ray on the machine.

Needs root and iproute2 (`.ci/run` installs it). Building fails loudly: on CI a test that cannot
build the cluster fails rather than skips.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def code_dirs() -> list[Path]:
    """Every directory the project's packages import from on this machine: this checkout (on
    PYTHONPATH) and the one an editable install points at, which is what a bare node must lack."""
    found = {REPO}
    probe = "import orchestrator, trainers; print(orchestrator.__file__); print(trainers.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd="/", timeout=60)
    found.update(Path(line).parents[1] for line in proc.stdout.split())
    return sorted(found)


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@dataclass
class Node:
    name: str  # network namespace, and the node's hostname
    ip: str
    temp_dir: Path
    cpus: int
    private: Path | None = None  # a directory hidden under a tmpfs on this node only
    bare: bool = False  # the project's code hidden on this node (a worker set up without resweep)

    def pids(self) -> list[int]:
        out = sh("ip", "netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]


@dataclass
class MultiHostCluster:
    """Handles to a running cluster (see the module docstring)."""

    id: str
    base: Path  # short path under /tmp: temp dirs, token, logs
    head: Node
    workers: list[Node]
    token_file: Path
    private_results: Path
    bridge: str
    build_seconds: float = 0.0
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every node (AWS_*)
    s3_bucket: str | None = None
    pg_port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.head.ip}:6379"

    @property
    def dashboard(self) -> str:
        return f"http://{self.head.ip}:8265"

    @property
    def nodes(self) -> list[Node]:
        return [self.head, *self.workers]

    def worker_by_ip(self, ip: str) -> Node:
        return next(w for w in self.workers if w.ip == ip)

    # --- processes inside the namespaces ---

    def node_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RESWEEP_", "AWS_"))}
        env.update(
            RAY_USAGE_STATS_ENABLED="0",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token_file),
            PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            # a lost node is noticed in seconds, not the default half minute
            RAY_health_check_period_ms="1000",
            RAY_health_check_timeout_ms="1000",
            RAY_health_check_failure_threshold="3",
            OMP_NUM_THREADS="1",
        )
        env.update(self.env)
        env.update(extra or {})
        return env

    def _wrap(self, node: Node, argv: list[str]) -> list[str]:
        """argv run in the node's network namespace, with its own hostname and mounts."""
        setup = [f"hostname {shlex.quote(node.name)}"]
        if node.private is not None:
            setup.append(f"mount -t tmpfs -o size=16m rsw-private {shlex.quote(str(node.private))}")
        if node.bare:  # empty directories over every copy of the project, then leave them
            setup += [f"mount -t tmpfs -o size=1m rsw-bare {shlex.quote(str(d))}" for d in code_dirs()]
            setup.append("cd /")
        script = " && ".join(setup) + ' && exec "$@"'
        return ["ip", "netns", "exec", node.name, "unshare", "--uts", "--mount", "--propagation", "private",
                "sh", "-c", script, "sh", *argv]

    def popen(self, node: Node, argv: list[str], *, env: dict[str, str] | None = None, log: Path | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.PIPE
        return subprocess.Popen(self._wrap(node, argv), env=self.node_env(env), cwd=cwd or REPO,
                                stdout=out, stderr=subprocess.STDOUT, text=log is None, start_new_session=True)

    def run(self, node: Node, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self._wrap(node, argv), env=self.node_env(env), cwd=cwd or REPO, input=input,
                              capture_output=True, text=True, timeout=timeout)

    def cli(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """`python -m orchestrator ARGS` on the head node (where a driver runs), to its end."""
        return self.run(self.head, [sys.executable, "-m", "orchestrator", *args], env=env, cwd=cwd, timeout=timeout)

    def start_cli(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                  log: Path | None = None) -> subprocess.Popen:
        return self.popen(self.head, [sys.executable, "-m", "orchestrator", *args], env=env, cwd=cwd, log=log)

    # --- Ray ---

    def start_node(self, node: Node) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        if not Path(ray).exists():
            ray = shutil.which("ray") or "ray"
        node.temp_dir = self.base / f"{node.name[-1]}{secrets.token_hex(2)}"  # fresh after a kill
        common = ["--temp-dir", str(node.temp_dir), "--node-ip-address", node.ip, "--num-cpus", str(node.cpus),
                  "--num-gpus", "0", "--disable-usage-stats"]
        if node is self.head:
            argv = [ray, "start", "--head", "--port", "6379", "--dashboard-host", node.ip, "--dashboard-port", "8265",
                    "--include-dashboard", "true", "--object-store-memory", str(200 * 1024**2), *common]
        else:
            argv = [ray, "start", "--address", self.address, "--object-store-memory", str(150 * 1024**2), *common]
        # A machine under heavy load can miss ray start's own deadlines (its raylet must register with
        # the GCS within a fixed 30 s, ray/_private/node.py): seen twice in a row at load 15 on 2 cores.
        for attempt in range(4):
            proc = self.run(node, argv, timeout=240)
            if proc.returncode == 0:
                return
            self.kill_node(node)  # moto and PostgreSQL start after Ray on the head, so nothing else is lost
            node.temp_dir = self.base / f"{node.name[-1]}{secrets.token_hex(2)}"
            argv[argv.index("--temp-dir") + 1] = str(node.temp_dir)
        raise RuntimeError(f"ray start on {node.name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-3000:]}")

    def alive_nodes(self) -> list[str]:
        code = ("import ray,logging; ray.init(address='auto', logging_level=logging.ERROR, log_to_driver=False); "
                "print(' '.join(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])))")
        proc = self.run(self.head, [sys.executable, "-c", code], env={"RAY_ADDRESS": self.address}, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot list the cluster's nodes: {proc.stderr[-2000:]}")
        return proc.stdout.split()

    def wait_nodes(self, ips: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            alive = self.alive_nodes()
            if sorted(alive) == sorted(ips):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster nodes {alive}, expected {sorted(ips)}")
            time.sleep(1)

    def kill_node(self, node: Node) -> int:
        """SIGKILL every process in the node's namespace (a host lost at once). Returns how many."""
        pids = node.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while node.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        return len(pids)

    def restart_worker(self, node: Node, *, bare: bool = False) -> None:
        """Kill the worker and start it again (`bare`: without the project's code on it)."""
        self.kill_node(node)
        node.bare = bare
        self.start_node(node)
        self.wait_nodes([n.ip for n in self.nodes])

    # --- building and tearing down ---

    def s3_keys(self, prefix: str = "") -> list[str]:
        """The object store's keys (listed from the head's namespace, where the server is)."""
        code = ("import boto3,sys; s3=boto3.client('s3'); p=s3.get_paginator('list_objects_v2'); "
                "[print(o['Key']) for page in p.paginate(Bucket=sys.argv[1], Prefix=sys.argv[2]) "
                "for o in page.get('Contents', [])]")
        proc = self.run(self.head, [sys.executable, "-c", code, self.s3_bucket, prefix], timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"listing the object store failed: {proc.stderr[-2000:]}")
        return proc.stdout.split()

    def _object_store_env(self) -> None:
        """The AWS_* variables of every node (set before the nodes start: Ray's workers inherit them)."""
        port = 9000 + secrets.randbelow(900)
        self.env.update(AWS_ENDPOINT_URL=f"http://{self.head.ip}:{port}", AWS_ACCESS_KEY_ID="resweep-test",
                        AWS_SECRET_ACCESS_KEY="resweep-test-" + secrets.token_hex(8), AWS_REGION="us-east-1")

    def _start_object_store(self) -> None:
        port = self.env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
        server = str(Path(sys.executable).with_name("moto_server"))
        self.popen(self.head, [server, "-H", self.head.ip, "-p", port], log=self.base / "moto.log")
        self.s3_bucket = f"rsw-{self.id}"
        code = ("import boto3,sys,time\nfor i in range(120):\n  try:\n    boto3.client('s3').create_bucket("
                "Bucket=sys.argv[1]); break\n  except Exception:\n    time.sleep(0.5)\nelse:\n  sys.exit(1)")
        proc = self.run(self.head, [sys.executable, "-c", code, self.s3_bucket], timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"moto's S3 server did not start: {(self.base / 'moto.log').read_text()[-2000:]}")

    def start_postgres(self) -> str:
        """A private PostgreSQL in the head's namespace; returns its URL as the nodes reach it."""
        bin_dir = Path("/usr/lib/postgresql/15/bin")
        data, sock = self.base / "pg", self.base / "pgsock"
        for d in (data, sock):
            d.mkdir(mode=0o700)
            shutil.chown(d, "postgres")
        # Below the kernel's ephemeral range (32768-60999), where the head's Ray processes bind
        # their own ports (port 0), and above Ray's worker ports (10002-19999). A start on 35540
        # once failed, most likely on such a port (its log went with the temp dir: now shown).
        self.pg_port = 20000 + secrets.randbelow(12000)
        sh("runuser", "-u", "postgres", "--", str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
           "-U", "postgres", timeout=120)
        with open(data / "pg_hba.conf", "a") as f:  # the nodes, over the bridge (only our namespaces see it)
            f.write(f"host all all {self.head.ip.rsplit('.', 1)[0]}.0/24 trust\n")
        proc = self.run(self.head, ["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D", str(data),
                                    "-l", str(sock / "pg.log"), "-w", "-t", "120", "-o",
                                    f"-h {self.head.ip} -p {self.pg_port} -k {sock}", "start"], timeout=180)
        if proc.returncode != 0:
            log = sock / "pg.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"PostgreSQL did not start on port {self.pg_port}: {proc.stderr}{proc.stdout}\n{tail}")
        return f"postgresql://postgres@{self.head.ip}:{self.pg_port}/postgres"

    @property
    def pg_local_url(self) -> str:
        """The private PostgreSQL as this (root namespace) process reaches it: its unix socket."""
        return f"postgresql+psycopg://postgres@/postgres?host={self.base / 'pgsock'}&port={self.pg_port}"

    @classmethod
    def build(cls, *, env: dict[str, str] | None = None, object_store: bool = False) -> MultiHostCluster:
        if os.geteuid() != 0:
            raise RuntimeError("building the multi-host test cluster needs root (network namespaces)")
        if shutil.which("ip") is None:
            raise RuntimeError("building the multi-host test cluster needs iproute2 (`apt-get install iproute2`)")
        start = time.monotonic()
        ident = secrets.token_hex(3)
        a, b = 100 + secrets.randbelow(100), secrets.randbelow(250) + 1  # 10.a.b.0/24, inside our namespaces only
        base = Path(f"/tmp/rsw{ident}")
        base.mkdir()
        token_file = base / "token"
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
        private = base / "private-results"
        private.mkdir()
        head = Node(f"rsw{ident}-h", f"10.{a}.{b}.1", base, cpus=0)
        workers = [Node(f"rsw{ident}-a", f"10.{a}.{b}.2", base, cpus=1),
                   Node(f"rsw{ident}-b", f"10.{a}.{b}.3", base, cpus=1, private=private)]
        cluster = cls(id=ident, base=base, head=head, workers=workers, token_file=token_file,
                      private_results=private, bridge=f"rswbr{ident}", env=dict(env or {}))
        base.chmod(0o755)  # PostgreSQL (user postgres) keeps its files here too
        try:
            cluster._network(a, b)
            if object_store:
                cluster._object_store_env()
            cluster.start_node(head)
            for w in workers:
                cluster.start_node(w)
            cluster.wait_nodes([n.ip for n in cluster.nodes])
            if object_store:
                cluster._start_object_store()
        except BaseException:
            cluster.teardown()
            raise
        cluster.build_seconds = time.monotonic() - start
        return cluster

    def _network(self, a: int, b: int) -> None:
        h = self.head.name
        for node in self.nodes:
            sh("ip", "netns", "add", node.name)
            sh("ip", "-n", node.name, "link", "set", "lo", "up")
        sh("ip", "-n", h, "link", "add", self.bridge, "type", "bridge")
        sh("ip", "-n", h, "addr", "add", f"{self.head.ip}/24", "dev", self.bridge)
        sh("ip", "-n", h, "link", "set", self.bridge, "up")
        for i, w in enumerate(self.workers):
            outer, inner = f"rsv{self.id}{i}", f"rsw{self.id}{i}"
            # both ends are made in the head's namespace, then one moves into the worker's
            sh("ip", "-n", h, "link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("ip", "-n", h, "link", "set", inner, "netns", w.name)
            sh("ip", "-n", h, "link", "set", outer, "master", self.bridge)
            sh("ip", "-n", h, "link", "set", outer, "up")
            sh("ip", "-n", w.name, "addr", "add", f"{w.ip}/24", "dev", inner)
            sh("ip", "-n", w.name, "link", "set", inner, "up")

    def teardown(self) -> None:
        for node in reversed(self.nodes):
            try:
                self.kill_node(node)
            except Exception:
                pass
        for node in self.nodes:
            sh("ip", "netns", "delete", node.name, check=False)  # takes its veths and the bridge along
        shutil.rmtree(self.base, ignore_errors=True)
