"""The WhatsApp Cloud API webhook body, as far as the adapter reads it (CHANNELS.md §4).

Meta posts ``{"object": "whatsapp_business_account", "entry": [{"id", "changes": [{"field",
"value"}]}]}``. Only ``field == "messages"`` carries buyer messages (``value.messages[]``) and
receipts for ours (``value.statuses[]``); other fields (template reviews, account updates) are
acknowledged and ignored, so a change's ``value`` is decoded only once its field is known.
Unknown keys are ignored everywhere: Meta adds fields without a version bump.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Short = Annotated[str, msgspec.Meta(max_length=1024)]
# A buyer's text is at most 4096 characters on WhatsApp; anything far beyond that is not Meta.
Body = Annotated[str, msgspec.Meta(max_length=65_536)]


class Profile(msgspec.Struct, frozen=True):
    name: Short | None = None


class Contact(msgspec.Struct, frozen=True):
    wa_id: Id | None = None
    profile: Profile | None = None


class Metadata(msgspec.Struct, frozen=True):
    phone_number_id: Id | None = None
    display_phone_number: Short | None = None


class Text(msgspec.Struct, frozen=True):
    body: Body = ""


class Media(msgspec.Struct, frozen=True):
    """``image``, ``video``, ``audio``, ``document`` and ``sticker`` all have this shape."""

    id: Id
    mime_type: Short | None = None
    sha256: Short | None = None
    caption: Body | None = None
    filename: Short | None = None
    voice: bool | None = None
    animated: bool | None = None


class Location(msgspec.Struct, frozen=True):
    latitude: float | None = None
    longitude: float | None = None
    name: Short | None = None
    address: Short | None = None
    url: Short | None = None


class InteractiveReply(msgspec.Struct, frozen=True):
    id: Short | None = None
    title: Short = ""
    description: Short | None = None


class Interactive(msgspec.Struct, frozen=True):
    type: Short = ""
    button_reply: InteractiveReply | None = None
    list_reply: InteractiveReply | None = None


class Button(msgspec.Struct, frozen=True):
    """A tap on a quick-reply button of one of our templates."""

    text: Short = ""
    payload: Short | None = None


class Reaction(msgspec.Struct, frozen=True):
    message_id: Id | None = None
    emoji: Short | None = None  # absent or empty: the buyer removed their reaction


class ContactName(msgspec.Struct, frozen=True):
    formatted_name: Short | None = None


class ContactPhone(msgspec.Struct, frozen=True):
    phone: Short | None = None


class SharedContact(msgspec.Struct, frozen=True):
    name: ContactName | None = None
    phones: Annotated[list[ContactPhone], msgspec.Meta(max_length=50)] = []


class System(msgspec.Struct, frozen=True):
    body: Body | None = None
    type: Short | None = None


class ErrorData(msgspec.Struct, frozen=True):
    details: Short | None = None


class ProviderError(msgspec.Struct, frozen=True):
    """An entry of ``statuses[].errors`` or ``messages[].errors``."""

    code: int | None = None
    title: Short | None = None
    message: Short | None = None
    error_data: ErrorData | None = None


class Context(msgspec.Struct, frozen=True):
    id: Id | None = None
    forwarded: bool | None = None


class Message(msgspec.Struct, frozen=True):
    sender: Id = msgspec.field(name="from")
    id: Id
    type: Short
    timestamp: Short | None = None
    text: Text | None = None
    image: Media | None = None
    video: Media | None = None
    audio: Media | None = None
    document: Media | None = None
    sticker: Media | None = None
    location: Location | None = None
    interactive: Interactive | None = None
    button: Button | None = None
    reaction: Reaction | None = None
    contacts: Annotated[list[SharedContact], msgspec.Meta(max_length=50)] | None = None
    system: System | None = None
    context: Context | None = None
    errors: Annotated[list[ProviderError], msgspec.Meta(max_length=20)] = []

    def media(self) -> Media | None:
        found: Media | None = getattr(self, self.type, None) if self.type in MEDIA_TYPES else None
        return found


MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


class Status(msgspec.Struct, frozen=True):
    id: Id
    status: Short
    timestamp: Short | None = None
    recipient_id: Id | None = None
    errors: Annotated[list[ProviderError], msgspec.Meta(max_length=20)] = []


class Value(msgspec.Struct, frozen=True):
    messaging_product: Short | None = None
    metadata: Metadata | None = None
    contacts: Annotated[list[Contact], msgspec.Meta(max_length=1000)] = []
    messages: Annotated[list[Message], msgspec.Meta(max_length=1000)] = []
    statuses: Annotated[list[Status], msgspec.Meta(max_length=1000)] = []


class Change(msgspec.Struct, frozen=True):
    field: Short = ""
    value: msgspec.Raw = msgspec.Raw(b"null")


class Entry(msgspec.Struct, frozen=True):
    id: Short | None = None
    changes: Annotated[list[Change], msgspec.Meta(max_length=1000)] = []


class Envelope(msgspec.Struct, frozen=True):
    object: Short
    entry: Annotated[list[Entry], msgspec.Meta(max_length=1000)]


envelope_decoder = msgspec.json.Decoder(Envelope)
value_decoder = msgspec.json.Decoder(Value)


class GraphErrorBody(msgspec.Struct, frozen=True):
    """Graph API's error answer: ``{"error": {"message", "type", "code", "error_subcode",
    "error_data": {"details"}, "fbtrace_id"}}``."""

    message: Short | None = None
    type: Short | None = None
    code: int | None = None
    error_subcode: int | None = None
    error_data: ErrorData | None = None
    fbtrace_id: Short | None = None


class GraphError(msgspec.Struct, frozen=True):
    error: GraphErrorBody


class SentMessage(msgspec.Struct, frozen=True):
    id: Id


class SendAnswer(msgspec.Struct, frozen=True):
    """``{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id"}]}``."""

    messages: list[SentMessage] = []


class MediaInfo(msgspec.Struct, frozen=True):
    """``GET /{media-id}``: where to download the file (a short-lived URL) and what it is."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    mime_type: Short | None = None
    sha256: Short | None = None
    file_size: int | None = None
    id: Short | None = None


graph_error_decoder = msgspec.json.Decoder(GraphError)
send_answer_decoder = msgspec.json.Decoder(SendAnswer)
media_info_decoder = msgspec.json.Decoder(MediaInfo)

