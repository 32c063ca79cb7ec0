"""Every Redis key name the hub uses, in one place.

Keys are hash-tagged by partition (``ih:{p3}:...``) so that each multi-key Lua script touches one
slot and the same code runs on Redis Cluster. A conversation's partition is a function of its
natural key ``(channel instance, thread id)``, known before anything is stored, and is carried in
every id we mint (``"3.0193ab..."``) so any later lookup finds the slot without an index.
"""

from __future__ import annotations

import os
import re
import time
import zlib
from dataclasses import dataclass

PREFIX = "ih"
GLOBAL_TAG = "{g}"

ROUTER_GROUP = "router"
SENDER_GROUP = "sender"


def partition_of(channel_instance: str, thread_id: str, partitions: int) -> int:
    """Stable partition for a conversation's natural key (crc32: same on every process)."""
    return zlib.crc32(f"{channel_instance}\x00{thread_id}".encode()) % partitions


def new_id(partition: int) -> str:
    """Time-ordered, collision-safe id that also names its partition."""
    return f"{partition}.{time.time_ns():016x}{os.urandom(5).hex()}"


# ASCII only: str.isdigit() and int() also accept "²" or "٣", which no id of ours contains.
_ENTITY_ID = re.compile(r"(0|[1-9][0-9]{0,3})\.[0-9a-f]{1,40}")
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def partition_from_id(entity_id: str, partitions: int) -> int | None:
    """The partition an id was minted in, or None for anything that is not one of our ids."""
    match = _ENTITY_ID.fullmatch(entity_id) if len(entity_id) <= 64 else None
    if match is None:
        return None
    p = int(match.group(1))
    return p if p < partitions else None


def is_stream_id(value: str) -> bool:
    """A Redis stream entry id as XADD mints them ("1712345678901-0"), ASCII digits only."""
    return len(value) <= 41 and _STREAM_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class PartitionKeys:
    """Key names inside one partition; all share the partition's hash tag."""

    partition: int

    @property
    def base(self) -> str:
        return f"{PREFIX}:{{p{self.partition}}}:"

    @property
    def inbound(self) -> str:
        return self.base + "inbound"

    @property
    def outbox(self) -> str:
        return self.base + "outbox"

    @property
    def retry(self) -> str:
        return self.base + "retry"

    @property
    def dlq(self) -> str:
        return self.base + "dlq"

    @property
    def threads(self) -> str:
        return self.base + "threads"

    @property
    def contacts(self) -> str:
        return self.base + "contacts"

    @property
    def conversations(self) -> str:
        return self.base + "convs"

    @property
    def detached(self) -> str:
        """Conversations being deleted -> their contact (storage/lifecycle.py)."""
        return self.base + "detached"

    @property
    def replica_ack(self) -> str:
        """The probe a batch sets just before WAIT (storage/replication.py); expires."""
        return self.base + "replica-ack"

    def seen(self, channel_instance: str, provider_message_id: str) -> str:
        return f"{self.base}seen:{channel_instance}\x00{provider_message_id}"

    def reply_key(self, conversation_id: str, client_key: str) -> str:
        return f"{self.base}replykey:{conversation_id}\x00{client_key}"

    def conversation(self, conversation_id: str) -> str:
        return f"{self.base}conv:{conversation_id}"

    def index(self, field: str, value: str) -> str:
        """Set of conversations whose ``field`` is ``value`` (layout in lua/conversations.lua)."""
        return f"{self.base}idx:{field}:{value}"

    def conversation_messages(self, conversation_id: str) -> str:
        return f"{self.base}conv:{conversation_id}:msgs"

    def conversation_notes(self, conversation_id: str) -> str:
        """Agents' private notes on a conversation (list, oldest first; storage/workflow.py)."""
        return f"{self.base}conv:{conversation_id}:notes"

    @property
    def snoozed(self) -> str:
        """Zset of snoozed conversations by wake time (lua/workflow.lua)."""
        return self.base + "snoozed"

    def message(self, message_id: str) -> str:
        return f"{self.base}msg:{message_id}"

    def contact(self, contact_id: str) -> str:
        return f"{self.base}contact:{contact_id}"

    def blob_refs(self, sha256: str) -> str:
        """Set of what references attachment file ``sha256`` in this partition: message ids,
        and ``u:<conversation>\0<upload id>`` for uploads not yet sent (storage/attachments.py)."""
        return f"{self.base}blob:{sha256}"

    def upload(self, conversation_id: str, upload_id: str) -> str:
        """An agent's uploaded file waiting to go out on a reply (hash, TTL)."""
        return f"{self.base}upload:{conversation_id}\x00{upload_id}"

    def uploads_pattern(self, conversation_id: str) -> str:
        return f"{self.base}upload:{conversation_id}\x00*"

    def delivery_index(self, channel_instance: str, provider_message_id: str) -> str:
        """Provider id of an outbound message -> our message id (lua/deliveries.lua)."""
        return f"{self.base}dlv:{channel_instance}\x00{provider_message_id}"

    def early_receipts(self, channel_instance: str, message_ref: str) -> str:
        """Receipts that arrived before the send returned, by provider id or our reply id."""
        return f"{self.base}early:{channel_instance}\x00{message_ref}"

    def reply_keys_pattern(self, conversation_id: str) -> str:
        """SCAN pattern of a conversation's reply idempotency keys (ids hold no glob chars)."""
        return f"{self.base}replykey:{conversation_id}\x00*"


QUARANTINE = f"{PREFIX}:{GLOBAL_TAG}:quarantine"


def survey_client(digest: str) -> str:
    """Requests to the survey-link page from one client address (a digest of it) in the
    current window (storage/surveys.py)."""
    return f"{PREFIX}:{GLOBAL_TAG}:survey:client:{digest}"

# Sum of the 'size' fields of the quarantine's entries (storage/lua/quarantine.lua).
QUARANTINE_BYTES = f"{PREFIX}:{GLOBAL_TAG}:quarantine:bytes"

# Routing state (agents, pools, waiting sets, timers, events) shares one hash tag so that every
# assignment decision is a single-slot Lua script; see storage/lua/routing.lua for the layout.
ROUTING_BASE = f"{PREFIX}:{{r}}:"
MIRROR_GROUP = "mirror"
ROUTING_RELOAD_CHANNEL = f"{ROUTING_BASE}reload"
ROUTING_EVENTS = f"{ROUTING_BASE}events"
ROUTING_TIMERS = f"{ROUTING_BASE}timers"
ROUTING_TIMERS_INFLIGHT = f"{ROUTING_BASE}timers:inflight"
# The live event log (storage/events.py) and agents' presence in a conversation: under the
# routing tag, so an append reads the routing state in the same single-slot step.
EVENT_LOG = f"{ROUTING_BASE}eventlog"
# conversation -> the agent the log last saw it assigned to (a transfer names who lost it)
EVENT_HOLDERS = f"{ROUTING_BASE}eventlog:holders"


def event_marker(routing_entry_id: str) -> str:
    """"This routing event is in the log already" (a reclaimed mirror entry writes nothing)."""
    return f"{ROUTING_BASE}eventlog:from:{routing_entry_id}"


def presence(conversation_id: str) -> str:
    """Hash agent -> "<state>|<expires at>": who is viewing or typing (hub/events_api.py)."""
    return f"{ROUTING_BASE}presence:{conversation_id}"


def presence_limit(conversation_id: str, agent_id: str, state: str) -> str:
    """Rate limit of one agent's presence events in one conversation (TTL = the interval)."""
    return f"{ROUTING_BASE}presence:{conversation_id}:{agent_id}:{state}"


# Conversations with a running SLA clock by their soonest deadline (storage/sla.py): under the
# routing tag, so the step of routing.lua that starts, stops or judges a clock writes it too.
ROUTING_SLA_DUE = f"{ROUTING_BASE}sla:due"
ROUTING_WAIT_PATTERN = f"{ROUTING_BASE}pool:*:wait:*"
ROUTING_AGENT_CONVS_PATTERN = f"{ROUTING_BASE}agent:*:convs"


def routing_state(conversation_id: str) -> str:
    return f"{ROUTING_BASE}rc:{conversation_id}"


def routing_log(conversation_id: str) -> str:
    return f"{ROUTING_BASE}rc:{conversation_id}:log"


def routing_markers_pattern(conversation_id: str) -> str:
    """SCAN pattern of the router's per-message "already routed" markers."""
    return f"{ROUTING_BASE}rc:{conversation_id}:routed:*"


def sticky(contact_id: str) -> str:
    return f"{ROUTING_BASE}sticky:{contact_id}"


# An attachment file being stored and not yet referenced by a message (TTL: the grace).
def blob_pin(sha256: str) -> str:
    return f"{PREFIX}:{GLOBAL_TAG}:blobpin:{sha256}"


# Data lifecycle: the store's schema version and the audit trail of erasures (no personal data).
# Canned replies: hash id -> JSON (storage/canned.py).
CANNED_REPLIES = f"{PREFIX}:{GLOBAL_TAG}:canned"
# Blocked senders: set of sha256 hex of "<instance>\0<handle>" (storage/workflow.py), so a
# sender blocked in one partition is known in every other one; no handle is kept in clear.
BLOCKED_SENDERS = f"{PREFIX}:{GLOBAL_TAG}:blocked"
SCHEMA_VERSION = f"{PREFIX}:{GLOBAL_TAG}:schema"
AUDIT = f"{PREFIX}:{GLOBAL_TAG}:audit"


# Leases (storage/leases.py) and poll cursors (storage/cursors.py). A lease and whatever it
# guards share the hash tag ``{<lease name>}``, so the fenced cursor write is one single-slot
# script on Redis Cluster too. The fence counter never expires: fences stay strictly
# increasing across grants for as long as the data lives.


def lease(name: str) -> str:
    """Hash ``fence``, ``owner``; expires with the lease's TTL."""
    return f"{PREFIX}:{{{name}}}:lease"


def lease_fence(name: str) -> str:
    """Counter of grants of the lease ``name``: the last fence handed out."""
    return f"{PREFIX}:{{{name}}}:fence"


def cursor(lease_name: str) -> str:
    """Hash ``value``, ``fence`` (of the writer), ``at``: the checkpoint of one polled account,
    under the lease that guards it (``channels.services.cursors.cursor_lease_name``)."""
    return f"{PREFIX}:{{{lease_name}}}:cursor"


# The shared rate limiter (storage/lua/limiter.lua): every bucket and ticket of a channel
# instance shares the instance's hash tag, so one decision is one slot. Recipients and tickets
# appear only as digests: no buyer handle or message id is written into the limiter's keys.
def limiter_base(channel_instance: str) -> str:
    return f"{PREFIX}:{{lim:{channel_instance}}}:"


def limiter_tickets(channel_instance: str) -> str:
    return limiter_base(channel_instance) + "tickets"


def limiter_ticket_expiry(channel_instance: str) -> str:
    return limiter_base(channel_instance) + "tickets:gc"


def limiter_bucket(channel_instance: str, limit_name: str, part: str = "") -> str:
    """``part``: "" for an account-scoped bucket, "<recipient digest>:turn" or ":sent"."""
    return limiter_base(channel_instance) + f"b:{limit_name}" + (f":{part}" if part else "")


# OAuth tokens (storage/tokens.py, lua/token_*.lua): an instance's record and the lock of its
# single-flight refresh share the hash tag ``{tok:<instance>}``, so a commit that checks the
# lock and the generation is one single-slot script. The record holds the tokens only
# encrypted; its other fields (expiry, generation, last error) are what operators see.
def token_base(channel_instance: str) -> str:
    return f"{PREFIX}:{{tok:{channel_instance}}}:"


def tokens(channel_instance: str) -> str:
    """Hash ``blob`` (sealed tokens), ``kid``, ``gen``, ``failures``, ``expires_at``, ``scope``,
    ``refreshable``, ``loaded_at``, ``refreshed_at``, ``error``, ``reauth``."""
    return token_base(channel_instance) + "tokens"


def token_lock(channel_instance: str) -> str:
    """String: the random id of the process refreshing now; expires with the lock's TTL."""
    return token_base(channel_instance) + "lock"


# Fetch after notify (storage/fetches.py, storage/lua/fetches.lua): every key of one channel
# instance's fetch queue shares the hash tag ``{fetch:<instance>}``, so each transition is one
# single-slot script. Dedupe keys appear only as digests.
FETCH_GROUP = "fetcher"
# Every instance that ever queued a fetch (operator views list them without the config).
FETCH_INSTANCES = f"{PREFIX}:{GLOBAL_TAG}:fetch:instances"


def fetch_base(channel_instance: str) -> str:
    return f"{PREFIX}:{{fetch:{channel_instance}}}:"


def fetch_stream(channel_instance: str) -> str:
    """Job ids ready to fetch, read by the consumer group ``FETCH_GROUP``."""
    return fetch_base(channel_instance) + "stream"


def fetch_job(channel_instance: str, job_id: str) -> str:
    return fetch_base(channel_instance) + f"job:{job_id}"


def fetch_state(channel_instance: str, state: str) -> str:
    """Zset of job ids in ``state`` (queued, retrying, failed), score 0: ordered by id."""
    return fetch_base(channel_instance) + state


def fetch_due(channel_instance: str) -> str:
    """Zset of retrying job ids by the time of their next attempt."""
    return fetch_base(channel_instance) + "due"


def fetch_seen(channel_instance: str, dedupe_digest: str) -> str:
    return fetch_base(channel_instance) + f"seen:{dedupe_digest}"


# Channel health (storage/health.py): per instance, counters and timestamps summed over every
# hub process, per-minute webhook outcomes for the subscription rules, and the alert states the
# evaluators agreed on. One hash tag per instance: the flush step is one slot.
def channel_health_base(channel_instance: str) -> str:
    return f"{PREFIX}:{{ch:{channel_instance}}}:health"


def channel_health(channel_instance: str) -> str:
    """Hash of counters (``webhook:<outcome>``) and timestamps (``inbound_at``, ``poll:<account>:
    ok_at``, ``send:error_at`` ...); layout in storage/lua/channel_health.lua."""
    return channel_health_base(channel_instance)


def channel_health_window(channel_instance: str) -> str:
    """Hash ``<minute>:ok`` / ``<minute>:failed`` of webhook answers, kept 6 h."""
    return channel_health_base(channel_instance) + ":window"


def channel_alerts(channel_instance: str) -> str:
    """Hash of alert states (``silent``, ``subscription``) and when they began."""
    return channel_health_base(channel_instance) + ":alerts"
