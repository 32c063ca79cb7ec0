"""A routing decision in words an operator understands.

The script and the engine record each step of a decision as a small JSON entry (``rc:<c>:log``:
pool ids, step numbers, reason codes). ``inboxhub routing explain`` and the API show those
entries; this module says what they mean — which step of which queue assigned the conversation
and why, which steps were skipped or held and why — so nobody has to know that ``es#2`` is the
second step of queue ``es`` or what ``capacity freed`` implies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_REASONS: dict[str, str] = {
    "best match": "the best match (rank, then lowest load, then longest idle) among online "
                  "agents of this step with free capacity",
    "sticky": "the buyer's last agent (within the sticky window), online, with room and "
              "matching at least as well as the best candidate",
    "escalated": "the best match once the conversation moved on to this step",
    "agent online": "the agent came online and this was the most urgent conversation waiting "
                    "for them",
    "capacity freed": "the agent freed capacity and this was the most urgent conversation "
                      "waiting for them",
    "manual transfer": "transferred by hand",
    "agent offline": "its previous agent went offline; it was placed again, best match first",
    "no reply": "its previous agent did not reply in time; it was placed again with another "
                "agent, best match first",
}


def _step(entry: Mapping[str, Any]) -> str:
    """``es#2`` -> 'step 2 of queue "es"'."""
    pool = str(entry.get("pool") or "")
    queue, _, number = pool.rpartition("#")
    step = entry.get("step") or number or "?"
    return f'step {step} of queue "{queue}"' if queue else f"step {step}"


def _seconds(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "?"
    return f"{number:g} s"


def _delay(state: Mapping[str, str], step: Any) -> str | None:
    """``after_seconds`` of a (1-based) step, from the delays recorded at enqueue time."""
    delays = [d for d in str(state.get("delays", "")).split(",") if d]
    try:
        return _seconds(delays[int(step) - 1])
    except (ValueError, IndexError, TypeError):
        return None


def describe(entry: Mapping[str, Any], state: Mapping[str, str] | None = None) -> str:
    """One log entry as a sentence."""
    state = state or {}
    event = entry.get("event")
    if event == "classified":
        parts = [f"language {entry.get('language') or 'unknown'} "
                 f"({entry.get('language_source') or '-'}, confidence "
                 f"{entry.get('language_confidence', 0)})",
                 f"market {entry.get('market') or 'unknown'} ({entry.get('market_source') or '-'})",
                 f"skill {entry.get('skill') or 'none'}"]
        rule = entry.get("rule")
        chose = (f'rule "{rule}" chose queue "{entry.get("queue")}"' if rule
                 else f'no rule matched: default queue "{entry.get("queue")}"')
        return f"{', '.join(parts)}; {chose} (priority {entry.get('priority', 0)})"
    if event == "transferred":
        return f'transferred to queue "{entry.get("queue")}": routed again from its first step'
    if event == "skipped":
        return (f"{_step(entry)} skipped at once: nobody online can serve it and the step has "
                f"skip_when_unstaffed = true")
    if event == "held":
        nxt = entry.get("next_after")
        later = f"the next step starts {_seconds(nxt)} after entering the queue" \
            if nxt is not None else "it waits for the next step"
        return (f"{_step(entry)}: nobody online can serve it, but the step is not skipped "
                f"(skip_when_unstaffed is off): it waits here for its agents; {later}")
    if event == "waiting":
        excluded = entry.get("excluded")
        but = f" (other than {excluded}, who just gave it back)" if excluded else ""
        return (f"waiting in {_step(entry)}: no eligible online agent{but} has free capacity "
                f"of its kind; assigned the moment one does")
    if event == "escalated":
        after = _delay(state, entry.get("step"))
        since = f"{after} in the queue passed" if after else "its time came"
        return f"moved on to {_step(entry)}: {since} (the step's after_seconds)"
    if event == "assigned":
        reason = str(entry.get("reason") or "")
        names = [str(c.get("agent")) for c in entry.get("candidates") or []
                 if isinstance(c, Mapping)]
        among = f"; candidates: {', '.join(names)}" if names else ""
        return (f"assigned to {entry.get('agent')} by {_step(entry)}: "
                f"{_REASONS.get(reason, reason or 'no reason recorded')}{among}")
    if event == "released":
        status = entry.get("status") or "closed"
        who = entry.get("agent") or "no agent"
        return f"released from {who} ({status})"
    if event == "requeued":
        who = entry.get("from") or "no agent"
        return f"back in the queue from {who}: {entry.get('why')}, with a priority boost"
    if event == "sla_breach":
        return f"SLA breach: the {entry.get('clock')} clock ran out; priority raised"
    rest = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("event", "at"))
    return f"{event}: {rest}" if rest else str(event)


def summary(state: Mapping[str, str], log: Sequence[Mapping[str, Any]]) -> str:
    """Where the conversation stands and why, in one sentence (log oldest first)."""
    status = state.get("status")
    if status == "assigned":
        for entry in reversed(log):
            if entry.get("event") == "assigned":
                return describe(entry, state)
        return f"assigned to {state.get('assignee')}"
    if status == "waiting":
        here = {"pool": state.get("pool"), "step": state.get("step")}
        steps = [p for p in str(state.get("pools", "")).split(",") if p]
        step = int(state.get("step") or 1)
        nxt = _delay(state, step + 1) if step < len(steps) else None
        later = f"; moves on to step {step + 1} {nxt} after entering the queue" if nxt else \
            "; this is the last step (the overflow): it waits here until someone can take it"
        return f"waiting in {_step(here)}{later}"
    if status == "closed":
        return "closed"
    return f"status {status or 'unknown'}"
