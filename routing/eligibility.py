"""Which pools (queue, step) an agent belongs to, and how well it matches each.

Computed in Python when an agent or the rules change, never per decision: the Lua decision
only reads the precomputed availability sets, so its cost does not grow with the number of
agents. Rank is measured against the queue's *first* step (the ideal) so that, after
relaxation, agents who still meet the original requirements win - which is also what keeps a
Portuguese buyer with a Portuguese speaker even in the overflow step.
"""

from __future__ import annotations

from routing.config import AgentConfig, QueueConfig, StepConfig

MAX_RANK = 40


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
    score = 0
    for lang, level in ideal.languages.items():
        have = agent.languages.get(lang, 0)
        if have >= level:
            score += 10 + min(have, 5)
    if ideal.markets and {m.upper() for m in agent.markets} & {m.upper() for m in ideal.markets}:
        score += 8
    for skill, level in ideal.skills.items():
        have = agent.skills.get(skill, 0)
        if have >= level:
            score += 6 + min(have, 5)
    return min(score, MAX_RANK)


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
