"""Reply windows and templates: when an agent may write free text, and what goes instead.

WhatsApp and Messenger allow free text for 24 h after the buyer's last message, Messenger's
``HUMAN_AGENT`` tag stretches that to 7 days for a human's reply, eBay allows 90 days; outside
every window only an approved template may go, and a channel that cannot start a conversation
(``can_initiate=False``) needs one for the first message too. ``window_state`` computes this
once, for both the check before a send (``ChannelAdapter.check_reply``) and the API, so the
inbox shows the agent what the send will enforce before they type.

A channel that knows its approved templates declares them (``TemplateSpec``, e.g. WhatsApp's
``[[channels.settings.templates]]``) in ``Capabilities.approved_templates``; a reply's template
is then checked against the declaration (name, language, number of parameters) before any
request is spent on it. ``templates=True`` with no declaration means the provider is the only
judge.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Annotated

import msgspec

from channels.errors import ReplyRejected
from channels.models import OutboundReply, TemplateRef

if TYPE_CHECKING:
    from channels.base import Capabilities

_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")
MAX_PARAMETER_LENGTH = 1024


class WindowClosed(ReplyRejected):
    """Free text is not allowed now; the message says what is (a template, a tag)."""


class TemplateRejected(ReplyRejected):
    """The template is not one the channel takes (unknown, wrong language or parameters)."""


class TemplateSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An approved template as a channel declares it.

    ``parameters`` names the positional parameters (``{{1}}``, ``{{2}}``, ... in ``body``) so
    the inbox can label its fields; a reply must give exactly that many, none empty. ``body``
    (optional) is the approved text, used to show the sent message in the conversation.
    ``language`` None: the template has no language (a marketplace reason code).
    """

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    language: Annotated[str, msgspec.Meta(min_length=2, max_length=16)] | None = None
    parameters: tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=64)], ...] = ()
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None

    def __post_init__(self) -> None:
        if self.body is None:
            return
        used = {int(n) for n in _PLACEHOLDER.findall(self.body)}
        wanted = set(range(1, len(self.parameters) + 1))
        if used != wanted:
            raise ValueError(
                f"template {self.name!r}: body placeholders {sorted(used)} do not match its "
                f"{len(self.parameters)} parameter(s) (expected {{{{1}}}}..{{{{n}}}})")


class ExtendedWindow(msgspec.Struct, frozen=True):
    """A longer window that is open now for a reply carrying ``tag``."""

    tag: str
    closes_at: float


class WindowState(msgspec.Struct, frozen=True):
    """What a reply may be right now.

    ``open``: free text is allowed (the standard window, or no window at all).
    ``closes_at``: when the standard window closes or closed (None: no window, or the buyer
    never wrote). ``template_required``: free text cannot go now, not even with a tag; only a
    template can (if ``templates``), else nothing until the buyer writes again.
    ``extended``: longer windows open now, usable by a reply that carries their tag.
    """

    open: bool
    closes_at: float | None
    template_required: bool
    templates: bool
    extended: tuple[ExtendedWindow, ...] = ()


def window_state(caps: Capabilities, last_inbound_at: float | None, now: float) -> WindowState:
    """The one computation of a conversation's window, for the send check and the API."""
    if last_inbound_at is None:
        # The buyer never wrote: only a channel that may start a conversation takes free text.
        return WindowState(open=caps.can_initiate, closes_at=None,
                           template_required=not caps.can_initiate, templates=caps.templates)
    window = caps.reply_window_seconds
    if window is None:
        return WindowState(open=True, closes_at=None, template_required=False,
                           templates=caps.templates)
    closes_at = last_inbound_at + window
    is_open = now <= closes_at
    extended = tuple(
        ExtendedWindow(w.tag, last_inbound_at + w.seconds) for w in caps.extended_windows
        if now <= last_inbound_at + w.seconds)
    return WindowState(open=is_open, closes_at=closes_at,
                       template_required=not is_open and not extended,
                       templates=caps.templates, extended=() if is_open else extended)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _hours(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 2 * 86400 else f"{seconds / 3600:g} h"


def check_window(caps: Capabilities, reply: OutboundReply, now: float, channel: str) -> None:
    """Raise ``WindowClosed`` (or ``ReplyRejected`` for a tag the channel does not know)
    unless the reply may go now; the message names what the agent can do instead."""
    tags = {w.tag: w for w in caps.extended_windows}
    if reply.tag is not None and reply.tag not in tags:
        known = ", ".join(sorted(tags)) or "none"
        raise ReplyRejected(f"{channel} takes no reply tag {reply.tag!r} (its tags: {known})")
    if reply.template is not None:
        return  # an approved template may go at any time
    state = window_state(caps, reply.last_inbound_at, now)
    if state.open:
        return
    if reply.tag is not None and any(w.tag == reply.tag for w in state.extended):
        return
    if reply.last_inbound_at is None:
        problem = f"{channel} cannot start a conversation with free text"
    elif reply.tag is not None:
        seconds = tags[reply.tag].seconds
        problem = (f"the {channel} {reply.tag} window of {_hours(seconds)} since the buyer's "
                   f"last message closed at {_when(reply.last_inbound_at + seconds)}")
    else:
        assert caps.reply_window_seconds is not None and state.closes_at is not None
        problem = (f"the {channel} reply window of {_hours(caps.reply_window_seconds)} since "
                   f"the buyer's last message closed at {_when(state.closes_at)}")
    remedies = []
    if reply.tag is None:
        remedies += [f"reply with tag {w.tag} (open until {_when(w.closes_at)})"
                     for w in state.extended]
    if caps.templates:
        remedies.append("send an approved template instead (the reply's template: name, "
                        "language, parameters)")
    if not remedies:
        raise WindowClosed(f"{problem}; {channel} takes no templates, so nothing can be sent "
                           "until the buyer writes again")
    raise WindowClosed(f"{problem}; " + ", or ".join(remedies))


def templates_for(caps: Capabilities, language: str | None) -> tuple[TemplateSpec, ...]:
    """The approved templates for a conversation in ``language`` (``es`` matches ``es`` and
    ``es_MX``, ``pt`` matches ``pt_BR``), with those without a language; all of them when
    none fits, so the agent always sees what can be sent."""
    if not language:
        return caps.approved_templates
    base = _base_language(language)
    found = tuple(t for t in caps.approved_templates
                  if t.language is None or _base_language(t.language) == base)
    return found or caps.approved_templates


def template_language(caps: Capabilities, name: str, language: str | None) -> str | None:
    """The language to send template ``name`` in for a conversation in ``language``: the
    approved one matching it (``pt`` -> ``pt_BR``), else the only one there is, else None
    (the reply then has to say which)."""
    named = [t for t in caps.approved_templates if t.name == name]
    if language:
        base = _base_language(language)
        for spec in named:
            if spec.language is not None and _base_language(spec.language) == base:
                return spec.language
    return named[0].language if len(named) == 1 else None


def _base_language(code: str) -> str:
    return code.replace("-", "_").split("_")[0].lower()


def check_template(caps: Capabilities, ref: TemplateRef, channel: str) -> TemplateSpec | None:
    """The declared template ``ref`` names (None when the channel declares none), or raise
    ``TemplateRejected`` saying what is wrong."""
    if not caps.templates:
        raise TemplateRejected(f"{channel} takes no templates")
    if not ref.name.strip():
        raise TemplateRejected("template name is empty")
    for i, value in enumerate(ref.parameters, 1):
        if not value.strip():
            raise TemplateRejected(f"template parameter {i} is empty")
        if len(value) > MAX_PARAMETER_LENGTH:
            raise TemplateRejected(f"template parameter {i} is longer than "
                                   f"{MAX_PARAMETER_LENGTH} characters")
    if not caps.approved_templates:
        return None
    named = [t for t in caps.approved_templates if t.name == ref.name]
    if not named:
        known = ", ".join(sorted({t.name for t in caps.approved_templates})[:20])
        raise TemplateRejected(f"template {ref.name!r} is not approved for this {channel} "
                               f"channel (approved: {known})")
    spec = next((t for t in named if t.language == ref.language), None)
    if spec is None:
        languages = ", ".join(sorted(t.language or "none" for t in named))
        raise TemplateRejected(f"template {ref.name!r} exists in language(s) {languages}, "
                               f"not {ref.language or 'none'}")
    if len(ref.parameters) != len(spec.parameters):
        labels = ", ".join(spec.parameters) or "none"
        raise TemplateRejected(f"template {ref.name!r} takes {len(spec.parameters)} "
                               f"parameter(s) ({labels}), got {len(ref.parameters)}")
    return spec


def render_template(spec: TemplateSpec | None, ref: TemplateRef) -> str:
    """The text to show in the conversation for a template reply."""
    if spec is not None and spec.body is not None:
        return _PLACEHOLDER.sub(lambda m: ref.parameters[int(m.group(1)) - 1], spec.body)
    language = f" ({ref.language})" if ref.language else ""
    values = f": {' | '.join(ref.parameters)}" if ref.parameters else ""
    return f"[template {ref.name}{language}]{values}"
