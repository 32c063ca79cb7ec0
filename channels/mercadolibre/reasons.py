"""Mercado Libre's action guide: the reasons a seller must pick to write first.

A seller cannot start a post-sale conversation with free text ([L5], CHANNELS.md §6.1):
``GET /messages/action_guide/packs/{pack}?tag=post_sale`` lists the reasons open for that pack
(``options``), each a fixed Mercado Libre text (``type: template``) or a free text under
``char_limit`` (``type: free_text``, e.g. ``OTHER``), with ``cap_available`` messages left;
``POST /messages/action_guide/packs/{pack}/option?tag=post_sale`` sends one. Skipping this on
a Mercado Envios 2 order is answered ``blocked_by_conversation_started_by_seller``.

In the contract a reason is a template: ``TemplateRef.name`` is the option id, and a free-text
reason takes one parameter, the text. The reasons differ per pack and change as caps are
spent, so they are read per conversation (``templates_for_thread``), never declared in
``Capabilities.approved_templates``. A template reason whose template takes variables
(``DELIVERY_PROMISE``: ``%s``, ``%d``) is left out and refused on send: the documentation shows
the variables, not how their values are passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from channels.errors import PermanentError, ReplyRejected
from channels.models import TemplateRef
from channels.windows import TemplateSpec

# A pack outside the action guide (inferred from third-party integrations): there the plain
# reply POST is allowed, so a free-text reason goes out as an ordinary message.
EXCEPTED_CODE: Final = "blocked_by_excepted_case"
FREE_TEXT_PARAMETER: Final = "text"
# What a pack outside the action guide offers the agent: free text, as the reason OTHER.
EXCEPTED_TEMPLATES: Final = (TemplateSpec(name="OTHER", parameters=(FREE_TEXT_PARAMETER,)),)


# Refusals of a reason that no retry mends and the agent can act on (inferred code names).
REFUSED_CODES: Final = frozenset({"cap_exceeded", "invalid_option", "invalid_template",
                                  "invalid_text"})


class NotInActionGuide(PermanentError):
    """The pack is outside the action guide (``blocked_by_excepted_case``)."""


class _Template(msgspec.Struct, frozen=True):
    id: str
    vars: list[Any] | None = None


class Option(msgspec.Struct, frozen=True):
    id: str
    type: str = "template"
    enabled: bool = True
    actionable: bool = True
    templates: list[_Template] | None = None
    char_limit: int | None = None
    cap_available: int = 0

    @property
    def free_text(self) -> bool:
        return self.type.lower() == "free_text"

    @property
    def fixed_template(self) -> str | None:
        """The id of this option's first template without variables."""
        return next((t.id for t in self.templates or () if not t.vars), None)

    @property
    def usable(self) -> bool:
        return self.enabled and self.actionable and self.cap_available > 0 and (
            self.free_text or self.fixed_template is not None)


class Guide(msgspec.Struct, frozen=True):
    options: list[Option] = []


def templates(guide: Guide) -> tuple[TemplateSpec, ...]:
    """The reasons an agent can send now, as the inbox lists templates."""
    return tuple(TemplateSpec(name=o.id, parameters=(FREE_TEXT_PARAMETER,) if o.free_text
                              else ()) for o in guide.options if o.usable)


def payload(guide: Guide, ref: TemplateRef, max_text: int) -> dict[str, Any]:
    """The option POST's body for ``ref``, or ``ReplyRejected`` naming what can be sent."""
    option = next((o for o in guide.options if o.id == ref.name), None)
    if option is None or not option.enabled or not option.actionable:
        raise ReplyRejected(f"Mercado Libre offers no reason {ref.name!r} for this order; "
                            f"open reasons: {_names(guide.options)}")
    if option.cap_available < 1:
        raise ReplyRejected(f"the reason {ref.name!r} has no messages left for this order "
                            f"(cap_available 0); open reasons: {_names(guide.options)}")
    if option.free_text:
        if len(ref.parameters) != 1:
            raise ReplyRejected(f"the reason {ref.name!r} takes one parameter, the text")
        limit = min(option.char_limit or max_text, max_text)
        text = ref.parameters[0]
        if len(text) > limit:
            raise ReplyRejected(f"the text is {len(text)} characters; the reason {ref.name!r} "
                                f"allows {limit}")
        return {"option_id": option.id, "text": text}
    if ref.parameters:
        raise ReplyRejected(f"the reason {ref.name!r} sends Mercado Libre's fixed text and "
                            f"takes no parameters")
    if option.fixed_template is None:
        raise ReplyRejected(f"the reason {ref.name!r} needs template variables, which "
                            "inboxhub cannot pass (their format is not documented)")
    return {"option_id": option.id, "template_id": option.fixed_template}


def _names(options: Sequence[Option]) -> str:
    return ", ".join(o.id for o in options if o.usable)[:400] or "none"
