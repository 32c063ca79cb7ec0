"""Classification of inbound conversations: language, market and skill (pure, synchronous)."""

from routing.classify.market import MarketGuess, classify_market, market_language
from routing.classify.skill import SkillClassifier, SkillGuess, SkillRule

__all__ = [
    "MarketGuess",
    "SkillClassifier",
    "SkillGuess",
    "SkillRule",
    "classify_market",
    "market_language",
]
