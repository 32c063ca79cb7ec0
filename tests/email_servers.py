"""Real mail servers for the email channel's tests: Debian's Dovecot and aiosmtpd.

Dovecot runs from a throwaway config in a temp dir (127.0.0.1, free ports, a passwd-file user,
maildir under the temp dir) once per test session. Its plain listener also offers STARTTLS and a
second listener speaks implicit TLS, both with a self-signed certificate made here, so every
``security`` mode of the client meets a real server. aiosmtpd records envelopes and can be told
to refuse the next message with a 4xx or 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import imaplib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOVECOT_USER = "ana@shop.test"
DOVECOT_PASSWORD = "dovecot-test-pass-\u00e9"  # non-ASCII on purpose: LOGIN quotes it


class ServerUnavailable(Exception):
    """The server binary is missing or did not start (the fixture skips or fails on it)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as probe, contextlib.suppress(OSError):
            probe.settimeout(0.5)
            probe.connect(("127.0.0.1", port))
            return True
        time.sleep(0.05)
    return False


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate for ``host`` (IP SAN), so TLS clients can verify it exactly."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def find_dovecot() -> str | None:
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)),
        None)


class TokenIntrospection:
    """An OAuth 2.0 token-introspection endpoint (RFC 7662, POST ``token=...``) on aiohttp in
    its own thread: Dovecot's oauth2 passdb asks it whether an XOAUTH2 token is valid, as it
    would ask Google or Microsoft. ``tokens`` maps a valid token to its user."""

    def __init__(self) -> None:
        import threading

        from aiohttp import web

        self.tokens: dict[str, str] = {}
        self.requests = 0
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

        async def introspect(request: web.Request) -> web.Response:
            self.requests += 1
            form = await request.post()
            user = self.tokens.get(str(form.get("token", "")))
            if user is None:
                return web.json_response({"active": False})
            return web.json_response({"active": True, "username": user})

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/introspect", introspect)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="token-introspection", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise ServerUnavailable("token introspection server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/introspect"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class DovecotServer:
    """One Dovecot master for the session; ``restart``/``change_uidvalidity`` for tests that
    need the server to go away or the mailbox to be recreated."""

    def __init__(self) -> None:
        binary = find_dovecot()
        if binary is None:
            raise ServerUnavailable("dovecot not installed (apt-get install dovecot-imapd)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="ihdovecot-"))
        self.dir.chmod(0o755)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls_port = free_port()
        self.user = DOVECOT_USER
        self.password = DOVECOT_PASSWORD
        self.cert, self.key = self_signed_cert(self.dir)
        if os.geteuid() == 0:
            # Dovecot refuses to run mail processes as root: hand the mail to its own user.
            mail_user = "dovecot"
            login_user = "dovenull"
        else:
            mail_user = login_user = pwd.getpwuid(os.geteuid()).pw_name
        entry = pwd.getpwnam(mail_user)
        self.mail_uid, self.mail_gid = entry.pw_uid, entry.pw_gid
        self.mail_root = self.dir / "mail"
        self.home = self.mail_root / self.user
        self.maildir = self.home / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        self._chown_tree(self.mail_root)
        (self.dir / "users").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        self.oauth = TokenIntrospection()
        (self.dir / "oauth2.conf.ext").write_text(
            f"introspection_mode = post\nintrospection_url = {self.oauth.url}\n"
            "username_attribute = username\nactive_attribute = active\nactive_value = true\n")
        self.conf = self.dir / "dovecot.conf"
        self.conf.write_text(self._config(mail_user, login_user))
        self.log = self.dir / "dovecot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def _config(self, mail_user: str, login_user: str) -> str:
        d = self.dir
        return f"""
base_dir = {d}/run
state_dir = {d}/state
instance_name = ihtest-{self.port}
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{self.key}
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
default_internal_user = {mail_user}
default_internal_group = {_group_name(self.mail_gid)}
default_login_user = {login_user}
first_valid_uid = {self.mail_uid}
last_valid_uid = {self.mail_uid}
first_valid_gid = 0
mail_location = maildir:~/Maildir
mail_uid = {self.mail_uid}
mail_gid = {self.mail_gid}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/users
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={self.mail_root}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  # no auth penalty: a wrong-password test must not slow the next test's logins by seconds
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
}}
"""

    def _chown_tree(self, root: Path) -> None:
        if os.geteuid() != 0:
            return
        os.chown(root, self.mail_uid, self.mail_gid)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), self.mail_uid, self.mail_gid)

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-F", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)  # its own group: see restart
        deadline = time.monotonic() + 15
        if not (_wait_port(self.port, self.proc, deadline)
                and _wait_port(self.tls_port, self.proc, deadline)):
            err = b""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read()
            self.stop_process()
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ServerUnavailable(f"dovecot did not start: {err.decode(errors='replace')} {log}")

    def stop_process(self, *, hard: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if hard:
            # the master and every login/imap child at once, as a crash or an OOM kill does
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        elif proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self, *, hard: bool = False) -> None:
        """Stop and start again on the same ports.

        Graceful (SIGTERM): the master goes in about a second but a session's imap process
        only says BYE about 10 s later (Dovecot's shutdown of IDLE clients). ``hard``: SIGKILL
        to the whole process group, every connection drops at once."""
        self.stop_process(hard=hard)
        self.start()

    def stop(self) -> None:
        self.stop_process(hard=True)  # no imap child may outlive the session
        self.oauth.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- mailbox helpers ------------------------------------------------------------------

    def deliver(self, raw: bytes) -> str:
        """Drop a message into ``new/`` the way an MDA does: write in tmp/, rename into new/."""
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.ihtest"
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(raw)
        if os.geteuid() == 0:
            os.chown(tmp, self.mail_uid, self.mail_gid)
        os.rename(tmp, self.maildir / "new" / name)
        return name

    async def adeliver(self, raw: bytes) -> str:
        return await asyncio.to_thread(self.deliver, raw)

    def imap(self) -> imaplib.IMAP4:
        """A stdlib client logged in and on INBOX, to look at flags behind the client's back."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        conn._encoding = "utf-8"  # type: ignore[attr-defined]  # lets LOGIN carry the é
        conn.login(self.user, self.password)
        conn.select("INBOX")
        return conn

    def append(self, raw: bytes, mailbox: str) -> None:
        """IMAP APPEND into ``mailbox`` (created if missing; name given as a quoted, modified
        UTF-7 argument, e.g. ``'"Env&AO0-os"'``)."""
        conn = self.imap()
        try:
            conn.create(mailbox)  # NO if it exists: fine
            typ, data = conn.append(mailbox, "", None, raw)
            assert typ == "OK", data
        finally:
            conn.logout()

    def flags(self, uid: int) -> set[str]:
        conn = self.imap()
        try:
            typ, data = conn.uid("FETCH", str(uid), "(FLAGS)")
            assert typ == "OK", data
            line = next(d for d in data if isinstance(d, bytes)).decode()
            inner = line[line.index("FLAGS (") + 7:]
            return set(inner[:inner.index(")")].split())
        finally:
            conn.logout()

    def clear_mailbox(self) -> None:
        """Empty INBOX (tests share the session server); UIDs keep ascending."""
        conn = self.imap()
        try:
            conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
            conn.expunge()
        except imaplib.IMAP4.error:
            pass  # empty mailbox: "1:*" is an invalid set for some servers
        finally:
            conn.logout()

    def change_uidvalidity(self) -> None:
        """Recreate the mailbox's UID state: Dovecot assigns a new, larger UIDVALIDITY and UIDs
        restart at 1, as after a server migration or a restored backup."""
        self.stop_process()
        for path in self.maildir.iterdir():
            if path.name.startswith("dovecot"):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        # messages already seen keep their old ",U=" hints nowhere (maildir names carry none),
        # so Dovecot renumbers them from 1 under the new UIDVALIDITY
        self.start()


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


# -- SMTP -----------------------------------------------------------------------------------


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class SmtpRecorder:
    """aiosmtpd handler: keeps every accepted envelope; ``fail_next`` refuses the next DATA."""

    received: list[ReceivedMail] = field(default_factory=list)
    fail_next: list[str] = field(default_factory=list)
    event: asyncio.Event | None = None
    oauth_tokens: dict[str, str] = field(default_factory=dict)  # valid token -> user

    def refuse_next(self, reply: str) -> None:
        """E.g. ``"451 4.3.0 try again later"`` or ``"550 5.1.1 no such user"``."""
        self.fail_next.append(reply)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        """Google's XOAUTH2 as Gmail's SMTP speaks it: the initial response
        ``base64("user=U\\x01auth=Bearer T\\x01\\x01")``; a bad token gets the error
        challenge (334 + base64 JSON), then 535 after the client's empty line."""
        import base64

        from aiosmtpd.smtp import AuthResult

        if len(args) < 2:  # ["XOAUTH2", initial response]
            return AuthResult(success=False, handled=False)
        try:
            decoded = base64.b64decode(args[1], validate=True).decode()
            fields = dict(part.split("=", 1) for part in decoded.split("\x01") if part)
        except ValueError:
            return AuthResult(success=False, handled=False)
        token = fields.get("auth", "").removeprefix("Bearer ")
        if self.oauth_tokens.get(token) == fields.get("user"):
            return AuthResult(success=True, auth_data=fields.get("user"))
        await server.challenge_auth(b'{"status":"401","schemes":"Bearer"}')  # then 535
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_next:
            return self.fail_next.pop(0)
        content = envelope.original_content or envelope.content
        self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos),
                                          bytes(content)))
        return "250 2.0.0 OK queued"


class SmtpServer:
    """aiosmtpd in its own thread (its Controller's model) on a free port; AUTH is offered
    without TLS so tests can log in over plain TCP on localhost."""

    def __init__(self, *, cert_dir: Path | None = None, implicit_tls: bool = False) -> None:
        """``cert_dir``: offer STARTTLS (or, with ``implicit_tls``, speak TLS from the first
        byte) with a self-signed certificate written there (``self.cert``)."""
        from aiosmtpd.controller import Controller

        self.handler = SmtpRecorder()
        tls: dict[str, Any] = {}
        self.cert: Path | None = None
        if cert_dir is not None:
            self.cert, key = self_signed_cert(cert_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, key)
            tls = {"ssl_context": context} if implicit_tls else {"tls_context": context}
        self.host = "127.0.0.1"
        self.port = free_port()
        self.username = "shop-smtp"
        self.password = "smtp-pass"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                          auth_data: Any) -> Any:
            from aiosmtpd.smtp import AuthResult, LoginPassword

            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login == self.username.encode()
                  and auth_data.password == self.password.encode())
            return AuthResult(success=ok, handled=False)  # handled=True: we answered (we did not)

        self.controller = Controller(
            self.handler, hostname=self.host, port=self.port,
            authenticator=authenticator, auth_require_tls=False, auth_required=False, **tls,
        )
        self.controller.start()

    def reset(self) -> None:
        self.handler.received.clear()
        self.handler.fail_next.clear()
        self.handler.oauth_tokens.clear()

    def stop(self) -> None:
        self.controller.stop()


def client_ssl_context(server: DovecotServer) -> ssl.SSLContext:
    """Trusts exactly the fixture's self-signed certificate (hostname checked against the IP)."""
    return ssl.create_default_context(cafile=str(server.cert))
