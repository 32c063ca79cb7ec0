"""The IMAP client against a real Dovecot: UIDs, BODY.PEEK, IDLE, restarts, UIDVALIDITY, auth."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from channels.email.imap import (
    FetchResult,
    ImapClient,
    decode_cursor,
    encode_cursor,
    resume_uid,
    xoauth2_string,
)
from channels.errors import AuthError, RetryableError
from tests.email_servers import client_ssl_context


def message(n: int, body: str = "hola") -> bytes:
    return (f"From: buyer{n}@buyer.test\r\nTo: ana@shop.test\r\nSubject: order {n}\r\n"
            f"Message-ID: <m{n}@buyer.test>\r\n\r\n{body} {n}\r\n").encode()


def client(dovecot: Any, **kwargs: Any) -> ImapClient:
    kwargs.setdefault("security", "none")
    kwargs.setdefault("password", dovecot.password)
    kwargs.setdefault("port", dovecot.port)
    return ImapClient(host=dovecot.host, username=dovecot.user, timeout=10, **kwargs)


async def test_fetch_returns_new_messages_by_uid_and_leaves_them_unseen(dovecot: Any) -> None:
    await dovecot.adeliver(message(1))
    await dovecot.adeliver(message(2))
    async with client(dovecot) as imap:
        assert imap.state is not None and imap.state.exists == 2
        first = await imap.fetch_since(0)
        uids = [m.uid for m in first.messages]
        assert len(uids) == 2 and uids == sorted(uids)
        assert first.messages[0].raw == message(1) and first.messages[1].raw == message(2)
        assert first.last_uid == uids[1]
        assert "\\Seen" not in first.messages[0].flags
        # n:* matches the highest message even when n is above it: filtered out client-side
        assert (await imap.fetch_since(uids[1])).messages == []
        await dovecot.adeliver(message(3))
        third = await imap.fetch_since(uids[1])
        assert [m.raw for m in third.messages] == [message(3)]
        assert third.messages[0].uid > uids[1]
    for uid in uids:
        assert "\\Seen" not in await asyncio.to_thread(dovecot.flags, uid)


async def test_message_over_the_cap_is_skipped_and_reported(dovecot: Any) -> None:
    await dovecot.adeliver(message(1))
    await dovecot.adeliver(message(2, body="x" * 5000))
    async with client(dovecot, max_message_bytes=1000) as imap:
        result = await imap.fetch_since(0)
    assert [m.raw for m in result.messages] == [message(1)]
    assert len(result.skipped) == 1 and result.skipped[0].size >= 5000
    assert result.last_uid == result.skipped[0].uid


async def test_idle_wakes_on_delivery(dovecot: Any) -> None:
    async with client(dovecot) as imap:
        assert imap.has_capability("IDLE")
        waiting = asyncio.create_task(imap.wait_for_new(timeout=60))
        await asyncio.wait_for(imap.idling.wait(), 10)
        await dovecot.adeliver(message(1))
        # the server pushes EXISTS: far sooner than the 60 s the wait would otherwise take
        assert await asyncio.wait_for(waiting, 10) is True
        assert [m.raw for m in (await imap.fetch_since(0)).messages] == [message(1)]


async def test_idle_is_reissued_and_still_wakes(dovecot: Any) -> None:
    async with client(dovecot, idle_renew_seconds=0.2) as imap:
        # ended with DONE and issued again each 0.2 s (the wait is long enough for three on a
        # loaded machine: each renewal is a round trip to Dovecot)
        assert await imap.wait_for_new(timeout=1.5) is False
        assert imap.idle_commands >= 3
        issued = imap.idle_commands
        waiting = asyncio.create_task(imap.wait_for_new(timeout=60))
        while imap.idle_commands < issued + 3:  # a few renewals into this wait
            await asyncio.wait_for(imap.idling.wait(), 10)
            await asyncio.sleep(0.05)
        await asyncio.wait_for(imap.idling.wait(), 10)
        await dovecot.adeliver(message(1))
        assert await asyncio.wait_for(waiting, 10) is True
        # the session is still usable after all those IDLE/DONE rounds
        assert len((await imap.fetch_since(0)).messages) == 1


async def test_polling_without_idle_sees_delivery(dovecot: Any) -> None:
    async with client(dovecot, poll_interval=0.1) as imap:
        imap._client().protocol.capabilities.discard("IDLE")  # as on a server without IDLE
        await dovecot.adeliver(message(1))
        assert await imap.wait_for_new(timeout=30) is True
        assert imap.idle_commands == 0


async def test_restart_mid_idle_is_retryable(dovecot: Any) -> None:
    imap = client(dovecot)
    await imap.connect()
    try:
        waiting = asyncio.create_task(imap.wait_for_new(timeout=60))
        await asyncio.wait_for(imap.idling.wait(), 10)
        # hard: every connection drops now (a graceful stop lets the session linger ~10 s)
        await asyncio.to_thread(dovecot.restart, hard=True)
        with pytest.raises(RetryableError):
            await asyncio.wait_for(waiting, 20)
        with pytest.raises(RetryableError):
            await imap.fetch_since(0)
    finally:
        await imap.close()
    async with client(dovecot) as again:  # a new client is the reconnect
        assert (await again.fetch_since(0)).messages == []


async def test_uidvalidity_change_restarts_the_cursor(dovecot: Any) -> None:
    await dovecot.adeliver(message(1))
    async with client(dovecot) as imap:
        assert imap.state is not None
        old = imap.state.uidvalidity
        result = await imap.fetch_since(0)
        assert result.last_uid is not None
        cursor = encode_cursor(old, result.last_uid)
        assert resume_uid(cursor, old) == result.last_uid
    await asyncio.to_thread(dovecot.change_uidvalidity)
    async with client(dovecot) as imap:
        assert imap.state is not None and imap.state.uidvalidity != old
        start = resume_uid(cursor, imap.state.uidvalidity)
        assert start == 0
        again = await imap.fetch_since(start)
    assert [m.raw for m in again.messages] == [message(1)]  # refetched: dedupe drops it


def test_cursor_round_trip_and_garbage() -> None:
    assert decode_cursor(encode_cursor(1796191665, 42)) == (1796191665, 42)
    assert resume_uid(None, 5) == 0
    assert resume_uid(encode_cursor(5, 9), 5, uidnext=10) == 9
    assert resume_uid(encode_cursor(5, 9), 5, uidnext=9) == 0  # beyond UIDNEXT: resync
    for bad in (b"", b"imap1:0:3", b"imap1:5", b"imap1:a:1", b"offset:5"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


async def test_wrong_password_is_auth_error(dovecot: Any) -> None:
    with pytest.raises(AuthError):
        await client(dovecot, password="wrong").connect()


async def test_refused_connection_is_retryable(dovecot: Any) -> None:
    from tests.email_servers import free_port

    with pytest.raises(RetryableError):
        await client(dovecot, port=free_port()).connect()


async def test_answered_flag_is_set(dovecot: Any) -> None:
    await dovecot.adeliver(message(1))
    async with client(dovecot) as imap:
        uid = (await imap.fetch_since(0)).messages[0].uid
        await imap.add_flags(uid, "\\Answered")
    assert await asyncio.to_thread(dovecot.flags, uid) == {"\\Answered"}


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_tls_and_starttls(dovecot: Any, security: str) -> None:
    await dovecot.adeliver(message(1))
    port = dovecot.tls_port if security == "tls" else dovecot.port
    async with client(dovecot, security=security, port=port,
                      ssl_context=client_ssl_context(dovecot)) as imap:
        assert not imap.has_capability("STARTTLS")  # capabilities re-read after TLS
        result: FetchResult = await imap.fetch_since(0)
    assert [m.raw for m in result.messages] == [message(1)]


async def test_tls_with_an_untrusted_certificate_is_refused(dovecot: Any) -> None:
    with pytest.raises(RetryableError):
        await client(dovecot, security="tls", port=dovecot.tls_port).connect()


def test_xoauth2_string_is_googles_format() -> None:
    assert xoauth2_string("a@b.c", "tok") == "user=a@b.c\x01auth=Bearer tok\x01\x01"


async def test_xoauth2_login_against_dovecots_oauth2_passdb(dovecot: Any) -> None:
    dovecot.oauth.tokens["ya29.valid-token"] = dovecot.user
    await dovecot.adeliver(message(1))
    async with client(dovecot, password=None, oauth_token="ya29.valid-token") as imap:
        assert [m.raw for m in (await imap.fetch_since(0)).messages] == [message(1)]
    assert dovecot.oauth.requests >= 1  # Dovecot really asked the introspection endpoint


async def test_xoauth2_with_a_refused_token_is_auth_error(dovecot: Any) -> None:
    with pytest.raises(AuthError) as caught:
        await client(dovecot, password=None, oauth_token="ya29.revoked").connect()
    assert "ya29" not in str(caught.value)  # a token never reaches an error text or a log


async def test_wire_traffic_never_reaches_the_logs(
        dovecot: Any, caplog: pytest.LogCaptureFixture) -> None:
    await dovecot.adeliver(message(1, body="secret-body-text"))
    dovecot.oauth.tokens["ya29.logged?"] = dovecot.user
    caplog.set_level(logging.DEBUG)
    async with client(dovecot) as imap:
        await imap.fetch_since(0)
    async with client(dovecot, password=None, oauth_token="ya29.logged?") as imap:
        pass
    import base64
    text = caplog.text
    assert "secret-body-text" not in text
    assert dovecot.password not in text and "ya29" not in text
    assert base64.b64encode(xoauth2_string(dovecot.user, "ya29.logged?").encode()).decode() \
        not in text


async def test_batches_cover_a_uid_prefix_until_nothing_is_left(dovecot: Any) -> None:
    mails = [message(n, body="x" * (3000 if n == 3 else 10)) for n in range(1, 6)]
    for raw in mails:
        await dovecot.adeliver(raw)
    seen: list[bytes] = []
    skipped = 0
    last = 0
    async with client(dovecot, max_message_bytes=2000) as imap:
        while True:
            batch = await imap.fetch_since(last, limit=2)
            assert len(batch.messages) <= 2
            seen += [m.raw for m in batch.messages]
            skipped += len(batch.skipped)
            if batch.last_uid is None:
                break
            last = batch.last_uid
            if not batch.more:
                assert (await imap.fetch_since(last)).last_uid is None
                break
    assert seen == [mails[i] for i in (0, 1, 3, 4)] and skipped == 1


async def test_mailbox_names_with_spaces_and_accents(dovecot: Any) -> None:
    from channels.email.imap import mailbox_arg

    name = "Envíos Amazon"
    await asyncio.to_thread(dovecot.append, message(1), mailbox_arg(name))
    async with client(dovecot, mailbox=name) as imap:
        assert [m.raw for m in (await imap.fetch_since(0)).messages] == [message(1)]


async def test_close_after_a_cancelled_idle_is_clean(dovecot: Any) -> None:
    imap = client(dovecot)
    await imap.connect()
    waiting = asyncio.create_task(imap.wait_for_new(timeout=60))
    await asyncio.wait_for(imap.idling.wait(), 10)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    def logouts() -> int:
        return dovecot.log.read_text(errors="replace").count("Disconnected: Logged out")

    before = logouts()
    await imap.close()  # DONE first: a LOGOUT sent inside IDLE is never answered
    for _ in range(200):  # Dovecot writes its log line just after the socket closes
        if logouts() > before:
            break
        await asyncio.sleep(0.05)
    assert logouts() == before + 1


async def test_a_large_backlog_is_fetched_in_batches(dovecot: Any) -> None:
    """A first sync of a mailbox with thousands of messages. aioimaplib parses the lines of
    one read recursively, one stack frame per line: a ``(UID RFC822.SIZE)`` answer for every
    message above the cursor overflowed the stack (RecursionError inside ``data_received``,
    the connection dropped, and every retry did the same), so only the batch's own UIDs may be
    asked for their size."""
    count = 3000
    for n in range(1, count + 1):
        dovecot.deliver(message(n))
    async with client(dovecot) as imap:
        first = await imap.fetch_since(0, limit=100)
        uids = [m.uid for m in first.messages]
        assert len(uids) == 100 and uids == sorted(uids) and first.more
        last = first.last_uid
        assert last is not None
        seen = [m.raw for m in first.messages]
        while True:
            batch = await imap.fetch_since(last, limit=300)
            assert all(m.uid > last for m in batch.messages)
            seen += [m.raw for m in batch.messages]
            if batch.last_uid is None:
                break
            last = batch.last_uid
    # the maildir's files get their UIDs in directory order, not delivery order
    assert sorted(seen) == sorted(message(n) for n in range(1, count + 1))


async def test_a_message_announced_in_another_answer_is_not_waited_for(dovecot: Any) -> None:
    """A server reports a new message once, in the answer to a command that syncs (RFC 3501
    lets it be any; Dovecot's is NOOP, as mark_seen's or a flag change's session sends): an
    IDLE started after that would wait for the next change. The wait returns at once, and
    the fetch after it finds the message."""
    async with client(dovecot) as imap:
        assert (await imap.fetch_since(0)).messages == []
        assert await imap.wait_for_new(timeout=0.3) is False  # nothing came: it waited
        await dovecot.adeliver(message(1))
        await imap._call("NOOP", imap._client().noop())  # answer: * 1 EXISTS
        assert imap.announced
        started = asyncio.get_running_loop().time()
        assert await imap.wait_for_new(timeout=30) is True
        assert asyncio.get_running_loop().time() - started < 1.0
        assert [m.raw for m in (await imap.fetch_since(0)).messages] == [message(1)]
