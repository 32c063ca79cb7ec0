"""The fixtures themselves: Dovecot serves the maildir a test delivers into, and a UIDVALIDITY
change does what the client tests rely on."""

from __future__ import annotations

from typing import Any


def test_delivered_message_is_served_unseen(dovecot: Any) -> None:
    dovecot.deliver(b"From: a@buyer.test\r\nSubject: hi\r\n\r\nhola\r\n")
    conn = dovecot.imap()
    try:
        typ, data = conn.uid("SEARCH", "ALL")
        uids = [int(u) for u in data[0].split()]
    finally:
        conn.logout()
    assert typ == "OK" and len(uids) == 1
    assert "\\Seen" not in dovecot.flags(uids[0])


def test_change_uidvalidity_gives_a_new_one(dovecot: Any) -> None:
    dovecot.deliver(b"Subject: x\r\n\r\nx\r\n")

    def uidvalidity() -> int:
        conn = dovecot.imap()
        try:
            return int(conn.response("UIDVALIDITY")[1][0])
        finally:
            conn.logout()

    before = uidvalidity()
    dovecot.change_uidvalidity()
    assert uidvalidity() != before
