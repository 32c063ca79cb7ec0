"""eBay Platform Notifications (SOAP): a safe parser and the ``NotificationSignature`` check.

Platform Notifications POST a SOAP 1.1 envelope (CHANNELS.md §6.2 [B5]); for
``MyMessagesM2MMessage`` the body is a ``GetMyMessagesResponse`` carrying ``Timestamp``,
``NotificationEventName``, ``RecipientUserID`` and ``Messages/Message{Sender, ItemID,
MessageID, ...}`` (field names from the Trading API's GetMyMessages [B4]; the envelope layout
from a public integration's recorded notification). The header carries
``RequesterCredentials/NotificationSignature`` = ``base64(md5(Timestamp + DevID + AppID +
CertID))`` [B6], where Timestamp is the body's ``Timestamp`` text exactly as sent.

The body is attacker-controlled until that signature is checked, and XML is dangerous to parse
naively (entity expansion, external entities). defusedxml is not installed in this project,
so parsing goes straight to expat with every door shut: a DOCTYPE or ENTITY anywhere in the
raw bytes is refused before parsing; expat's doctype, entity-declaration and external-entity
handlers refuse as well (a UTF-16 body could hide the bytes from the first check); parameter
entities are never parsed; size, depth, element count and text length are capped. What comes
out is a tiny tree of local names and text, nothing else of XML.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
from typing import Final
from xml.parsers import expat

import msgspec

MAX_SOAP_BYTES: Final = 256 * 1024
MAX_DEPTH: Final = 32
MAX_ELEMENTS: Final = 4000
MAX_TEXT_CHARS: Final = 64 * 1024
SOAP_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"
EBAY_NS: Final = "urn:ebay:apis:eBLBaseComponents"
_DECLARATIONS: Final = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class UnsafeXml(ValueError):
    """The body is not XML we are willing to read (a DOCTYPE, an entity, too big or deep)."""


class Node:
    """An element: its namespace, local name, text and children (no attributes: nothing here
    reads them)."""

    __slots__ = ("children", "name", "ns", "text")

    def __init__(self, ns: str, name: str) -> None:
        self.ns = ns
        self.name = name
        self.text = ""
        self.children: list[Node] = []

    def child(self, name: str) -> Node | None:
        return next((c for c in self.children if c.name == name), None)

    def child_text(self, name: str) -> str | None:
        found = self.child(name)
        return found.text.strip() if found is not None else None

    def path(self, *names: str) -> Node | None:
        node: Node | None = self
        for name in names:
            node = node.child(name) if node is not None else None
        return node


def _refuse(*_: object) -> int:
    raise UnsafeXml("DOCTYPE, entity declarations and external entities are not accepted")


def parse_xml(body: bytes) -> Node:
    """The element tree of ``body``, or ``UnsafeXml`` / ``ValueError`` saying why not."""
    if len(body) > MAX_SOAP_BYTES:
        raise UnsafeXml(f"notification larger than {MAX_SOAP_BYTES} bytes")
    if _DECLARATIONS.search(body):
        _refuse()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    stack: list[Node] = []
    root: list[Node] = []
    count = 0

    def start(name: str, attrs: object) -> None:
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS or len(stack) >= MAX_DEPTH:
            raise UnsafeXml("notification nests too deeply or has too many elements")
        ns, _, local = name.rpartition(" ")
        node = Node(ns, local)
        if stack:
            stack[-1].children.append(node)
        elif root:
            raise UnsafeXml("more than one root element")
        else:
            root.append(node)
        stack.append(node)

    def end(name: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack:
            node = stack[-1]
            if len(node.text) + len(data) > MAX_TEXT_CHARS:
                raise UnsafeXml("an element's text is too long")
            node.text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise ValueError(f"not well-formed XML ({expat.errors.messages.get(exc.code, 'error')}"
                         f", line {exc.lineno})") from None
    if not root:
        raise ValueError("no root element")
    return root[0]


class Notification(msgspec.Struct, frozen=True):
    """What one notification says, as text; nothing here is trusted before ``verify`` passed,
    and only ``recipient``, ``sender``, ``item_id`` and ``message_id`` are ever used after."""

    timestamp: str | None
    signature: str | None
    event: str | None
    recipient: str | None
    sender: str | None
    item_id: str | None
    message_id: str | None


def read_notification(body: bytes) -> Notification:
    """The fields of a Platform Notification envelope (``UnsafeXml`` / ``ValueError`` when it
    is not one)."""
    root = parse_xml(body)
    if root.name != "Envelope":
        raise ValueError(f"root element is {root.name[:40]!r}, not a SOAP Envelope")
    soap_body = root.child("Body")
    if soap_body is None or not soap_body.children:
        raise ValueError("SOAP envelope without a Body")
    response = soap_body.children[0]
    header = root.child("Header")
    signature = header.path("RequesterCredentials", "NotificationSignature") \
        if header is not None else None
    message = response.path("Messages", "Message")
    return Notification(
        timestamp=response.child_text("Timestamp"),
        signature=signature.text.strip() if signature is not None else None,
        event=response.child_text("NotificationEventName"),
        recipient=response.child_text("RecipientUserID"),
        sender=message.child_text("Sender") if message is not None else None,
        item_id=message.child_text("ItemID") if message is not None else None,
        message_id=message.child_text("MessageID") if message is not None else None)


def notification_signature(timestamp: str, dev_id: str, app_id: str, cert_id: str) -> str:
    """What eBay puts in ``NotificationSignature`` for ``timestamp`` [B6]."""
    digest = hashlib.md5((timestamp + dev_id + app_id + cert_id).encode(),
                         usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def signature_matches(given: str, timestamp: str, dev_id: str, app_id: str,
                      cert_id: str) -> bool:
    """Constant-time comparison of ``given`` with the expected signature."""
    expected = notification_signature(timestamp, dev_id, app_id, cert_id)
    return hmac.compare_digest(given.encode(), expected.encode())


def timestamp_seconds(value: str) -> float | None:
    """``2015-07-28T14:14:29.887Z`` as UNIX seconds (a timestamp without a zone is GMT, as
    eBay's are); None when it is not an ISO 8601 time."""
    try:
        parsed = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()
