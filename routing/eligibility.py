"""Which pools (queue, step) an agent belongs to, and how well it matches each.

Computed in Python when an agent or the rules change, never per decision: the Lua decision
only reads the precomputed availability sets, so its cost does not grow with the number of
agents. Rank is measured against the queue's *first* step (the ideal) so that, after
relaxation, agents who still meet the original requirements win - which is also what keeps a
Portuguese buyer with a Portuguese speaker even in the overflow step.
"""

from __future__ import annotations

from routing.config import AgentConfig, QueueConfig, StepConfig

MAX_RANK = 40  # the Lua score reserves 0..40 for rank; tiers use 0..29


def pool_id(queue: str, step_index: int) -> str:
    return f"{queue}#{step_index + 1}"


def meets(agent: AgentConfig, step: StepConfig) -> bool:
    for lang, level in step.languages.items():
        if agent.languages.get(lang, 0) < level:
            return False
    if step.markets and not {m.upper() for m in agent.markets} & {m.upper() for m in step.markets}:
        return False
    return all(agent.skills.get(skill, 0) >= level for skill, level in step.skills.items())


def rank(agent: AgentConfig, ideal: StepConfig) -> int:
    """Language first, then market and skill: a lexicographic order packed into one number.

    Tier 2 speaks every required language at the required level, tier 1 speaks them at some
    level, tier 0 lacks one; market and skill only order agents within a tier, so no market or
    skill match can ever outrank the buyer's language (the language floor).
    """
    tier = 2
    for lang, level in ideal.languages.items():
        have = agent.languages.get(lang, 0)
        tier = min(tier, 2 if have >= level else 1 if have > 0 else 0)
    rest = 0
    if ideal.markets and {m.upper() for m in agent.markets} & {m.upper() for m in ideal.markets}:
        rest += 4
    for skill, level in ideal.skills.items():
        have = agent.skills.get(skill, 0)
        rest += 3 if have >= level else 1 if have > 0 else 0
    return tier * 10 + min(rest, 9)


def agent_pools(agent: AgentConfig, queues: list[QueueConfig]) -> dict[str, int]:
    """pool id -> rank for every step of every queue the agent is eligible for."""
    pools: dict[str, int] = {}
    for queue in queues:
        ideal = queue.steps[0]
        r = rank(agent, ideal)
        for i, step in enumerate(queue.steps):
            if meets(agent, step):
                pools[pool_id(queue.name, i)] = r
    return pools
