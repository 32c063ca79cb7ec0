"""The words of the server-drawn report charts (hub/charts.py) in the web inbox's interface
languages, so a supervisor working in Chinese reads the charts' titles, axes and legends in
Chinese like the rest of the page. Dimension values (es, MX, an agent id) are data, never
translated. English is the default and the fallback."""

from __future__ import annotations

from typing import Final, Literal

ChartLanguage = Literal["en", "zh"]
LANGUAGES: Final = ("en", "zh")

_BY: Final[dict[str, dict[str, str]]] = {
    "en": {"language": "language", "market": "market", "channel": "channel", "queue": "queue",
           "skill": "skill"},
    "zh": {"language": "语言", "market": "市场", "channel": "渠道", "queue": "队列",
           "skill": "技能"},
}
_WORDS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "response_time": "First response by {by} (mean, business minutes)",
        "volume": "Conversations by {by}",
        "csat": "Satisfaction by {by} (mean score, 1-5)",
        "leaderboard": "Resolved conversations per agent",
        "unit.response_time": "minutes", "unit.volume": "conversations", "unit.csat": "score",
        "unit.leaderboard": "resolved", "empty": "no data in this range",
    },
    "zh": {
        "response_time": "按{by}的首次响应（平均，工作分钟）",
        "volume": "按{by}的会话量",
        "csat": "按{by}的满意度（平均分，1-5）",
        "leaderboard": "各坐席已解决的会话",
        "unit.response_time": "分钟", "unit.volume": "会话", "unit.csat": "分",
        "unit.leaderboard": "已解决", "empty": "此时间段内没有数据",
    },
}


def words(language: str, chart: str, by: str = "language") -> tuple[str, str, str]:
    """(title, unit, the empty chart's text) of ``chart`` in ``language``."""
    table = _WORDS.get(language, _WORDS["en"])
    by_word = _BY.get(language, _BY["en"]).get(by, by)
    return (table[chart].format(by=by_word), table[f"unit.{chart}"], table["empty"])
