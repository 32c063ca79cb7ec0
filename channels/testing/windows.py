"""The window and template battery: mix ``WindowBattery`` into a ``ChannelConformance``
subclass (``class TestX(ChannelConformance, WindowBattery)``).

It checks the rules ``channels.windows`` derives from the adapter's capabilities, through the
adapter's real ``send`` against the harness's fake provider: free text inside the window is
sent; outside it free text is refused before any request, with a message naming the template
(and tag) path; an extended window needs its tag, and ends; a template goes out when free text
cannot (or is refused when the channel takes none); an undeclared template or a wrong number
of parameters is refused; a channel that cannot start conversations needs a template for the
first message. The API's ``reply_window`` reads the same ``WindowState``.

Needs no services (the window is computed from the reply and the capabilities). A channel that
takes templates gives a harness with ``sent_templates()`` (``TemplateHarness``) and, if it
declares no ``approved_templates``, overrides ``template_case``.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import msgspec
import pytest

from channels.errors import ReplyRejected
from channels.models import OutboundReply, TemplateRef
from channels.testing.core import ConformanceHarness, InboundCase, IngestGate

HOUR = 3600.0


@runtime_checkable
class TemplateHarness(Protocol):
    def sent_templates(self) -> list[TemplateRef | None]:
        """The template of each send the fake provider accepted (None: free text), in order."""
        ...


class WindowBattery:
    """Reply windows, extended windows (tags) and templates."""

    def template_case(self, harness: ConformanceHarness) -> TemplateRef | None:
        """A template the channel accepts; by default its first declared approved template
        with a value for every parameter."""
        specs = harness.adapter.capabilities.approved_templates
        if not specs:
            return None
        spec = specs[0]
        return TemplateRef(spec.name, spec.language,
                           tuple(f"value {i}" for i, _ in enumerate(spec.parameters, 1)))

    async def _window_reply(self, harness: ConformanceHarness, gate: IngestGate, text: str,
                            age: float | None, **fields: object) -> OutboundReply:
        """A reply on a stored conversation whose buyer last wrote ``age`` seconds ago
        (None: never)."""
        if not gate.results:
            assert await harness.deliver(self.inbound_cases()[0]), "not acknowledged"
        conversation = await gate.store.conversation(gate.results[0].conversation_id)
        assert conversation is not None
        reply = OutboundReply(
            reply_id=f"kit-{time.time_ns()}", conversation_id=conversation.id,
            channel_type=harness.adapter.type_name, channel_instance=harness.adapter.instance,
            thread_id=conversation.thread_id, recipient_handle=conversation.contact_handle,
            text=text, last_inbound_at=None if age is None else time.time() - age)
        return msgspec.structs.replace(reply, **fields) if fields else reply

    def inbound_cases(self) -> list[InboundCase]:
        raise NotImplementedError("ChannelConformance's inbound cases")

    def _templates_sent(self, harness: ConformanceHarness) -> list[TemplateRef | None]:
        assert isinstance(harness, TemplateHarness), \
            "a channel that takes templates needs a harness with sent_templates()"
        return harness.sent_templates()

    # -- the battery -----------------------------------------------------------------------

    async def test_window_state_follows_the_capabilities(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        adapter = harness.adapter
        caps = adapter.capabilities
        now = time.time()
        fresh = adapter.reply_window(now - 60, now)
        assert fresh.open and not fresh.template_required
        assert fresh.templates == caps.templates
        window = caps.reply_window_seconds
        if window is None:
            assert fresh.closes_at is None
            assert adapter.reply_window(now - 365 * 86400, now).open
            return
        assert fresh.closes_at == pytest.approx(now - 60 + window)
        late = adapter.reply_window(now - window - 60, now)
        assert not late.open and late.closes_at is not None and late.closes_at < now
        assert late.template_required == (not any(
            w.seconds > window + 60 for w in caps.extended_windows))
        never = adapter.reply_window(None, now)
        assert never.open == caps.can_initiate
        assert never.template_required == (not caps.can_initiate)

    async def test_free_text_outside_the_window_is_refused_naming_the_way_out(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        caps = harness.adapter.capabilities
        window = caps.reply_window_seconds
        if window is None:
            pytest.skip("the channel has no reply window")
        inside = await self._window_reply(harness, ingest_gate, "inside", window - 60)
        assert await harness.adapter.send(inside)
        longest = max([w.seconds for w in caps.extended_windows], default=window)
        closed = await self._window_reply(harness, ingest_gate, "too late", longest + 60)
        with pytest.raises(ReplyRejected) as info:
            await harness.adapter.send(closed)
        message = str(info.value)
        assert "closed at" in message
        if caps.templates:
            assert "template" in message, message
        else:
            assert "takes no templates" in message, message
        assert len(harness.sent()) == 1, "a refused reply reached the provider"

    async def test_extended_windows_need_their_tag(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        caps = harness.adapter.capabilities
        if not caps.extended_windows or caps.reply_window_seconds is None:
            pytest.skip("the channel has no extended windows")
        sent = 0
        for extended in caps.extended_windows:
            age = caps.reply_window_seconds + 60
            untagged = await self._window_reply(harness, ingest_gate, "human reply", age)
            with pytest.raises(ReplyRejected) as info:
                await harness.adapter.send(untagged)
            assert extended.tag in str(info.value), "the refusal must name the tag"
            tagged = msgspec.structs.replace(untagged, tag=extended.tag)
            assert await harness.adapter.send(tagged)
            sent += 1
            expired = await self._window_reply(harness, ingest_gate, "too late",
                                               extended.seconds + 60, tag=extended.tag)
            with pytest.raises(ReplyRejected) as info:
                await harness.adapter.send(expired)
            assert extended.tag in str(info.value) and "closed at" in str(info.value)
        assert len(harness.sent()) == sent

    async def test_an_unknown_tag_is_refused(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        reply = await self._window_reply(harness, ingest_gate, "hola", 60,
                                         tag="NOT_A_TAG_OF_THIS_CHANNEL")
        with pytest.raises(ReplyRejected, match="NOT_A_TAG_OF_THIS_CHANNEL"):
            await harness.adapter.send(reply)
        assert harness.sent() == []

    async def test_a_template_goes_when_free_text_cannot(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        caps = harness.adapter.capabilities
        age = (caps.reply_window_seconds or 0) + 30 * 86400 + max(
            [w.seconds for w in caps.extended_windows], default=0)
        case = self.template_case(harness) or TemplateRef("kit_probe", "en", ("x",))
        reply = await self._window_reply(harness, ingest_gate, "", age, template=case)
        if not caps.templates:
            with pytest.raises(ReplyRejected, match="takes no templates"):
                await harness.adapter.send(reply)
            assert harness.sent() == []
            return
        assert await harness.adapter.send(reply)
        assert self._templates_sent(harness) == [case]

    async def test_an_undeclared_template_is_refused(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        caps = harness.adapter.capabilities
        case = self.template_case(harness)
        if not caps.approved_templates or case is None:
            pytest.skip("the channel declares no approved templates")
        wrong = [
            (msgspec.structs.replace(case, name=case.name + "_not_approved"), "not approved"),
            (msgspec.structs.replace(case, language="xx-not-a-language"), "language"),
            (msgspec.structs.replace(case, parameters=(*case.parameters, "one too many")),
             "parameter"),
        ]
        if case.parameters:
            wrong.append((msgspec.structs.replace(
                case, parameters=("", *case.parameters[1:])), "empty"))
        for ref, reason in wrong:
            reply = await self._window_reply(harness, ingest_gate, "", 60, template=ref)
            with pytest.raises(ReplyRejected, match=reason):
                await harness.adapter.send(reply)
        assert harness.sent() == []

    async def test_writing_first_follows_can_initiate(
        self, harness: ConformanceHarness, ingest_gate: IngestGate
    ) -> None:
        caps = harness.adapter.capabilities
        first = await self._window_reply(harness, ingest_gate, "Hello, about your order",
                                         None)
        if caps.can_initiate:
            assert await harness.adapter.send(first)
            assert len(harness.sent()) == 1
            return
        with pytest.raises(ReplyRejected, match="cannot start a conversation"):
            await harness.adapter.send(first)
        assert harness.sent() == []
        case = self.template_case(harness)
        if caps.templates and case is not None:
            assert await harness.adapter.send(msgspec.structs.replace(first, template=case))
            assert self._templates_sent(harness) == [case]
