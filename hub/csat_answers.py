"""Reading a buyer's answer to the satisfaction survey out of their next message.

A rating is a message that is *only* a rating: "5", "4/5", "⭐⭐⭐⭐", "cinco", "五分", "👍",
"muy bueno". Anything with more in it ("5 days and still no refund", "thanks but where is my
parcel?") is a normal message and reopens the conversation: a false rating silences a buyer,
a missed one only loses a data point, so the parser errs towards "not a rating".
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final, Literal

Scale = Literal["five", "thumbs"]

_NUMBER_WORDS: Final[dict[str, int]] = {
    # en
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    # es
    "uno": 1, "una": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5,
    # pt
    "um": 1, "uma": 1, "dois": 2, "duas": 2, "tres ": 3, "quatro": 4,
    # zh
    "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5,
}
# Words meaning good / bad on their own, per language (accents folded, lower case).
_GOOD: Final = frozenset({
    "good", "great", "excellent", "perfect", "yes", "satisfied", "very good", "happy",
    "bueno", "muy bueno", "bien", "muy bien", "excelente", "perfecto", "si", "genial",
    "satisfecho", "satisfecha",
    "bom", "muito bom", "otimo", "perfeito", "sim", "satisfeito", "satisfeita",
    "好", "很好", "非常好", "满意", "非常满意", "是", "是的", "好评",
})
_BAD: Final = frozenset({
    # Never a bare "no": "no" to "did we solve it?" means it is not solved, and that buyer
    # must get their conversation back, not a 1 in the statistics.
    "bad", "terrible", "awful", "poor", "unsatisfied", "very bad",
    "malo", "muy malo", "mal", "muy mal", "pesimo", "insatisfecho",
    "ruim", "muito ruim", "pessimo", "pessima", "insatisfeito",
    "差", "很差", "不好", "不满意", "非常差", "差评",
})
_THUMBS_UP: Final = ("👍", "👌", "😀", "😃", "😊", "🙂", "❤", "♥")
_THUMBS_DOWN: Final = ("👎", "😞", "😠", "😡", "🙁", "☹")
_STARS: Final = re.compile(r"[⭐★]{1,5}")
_DIGIT: Final = re.compile(r"([1-5])(?:\s*(?:/|de|of|em|out of|分|星)\s*5)?\s*(?:stars?|estrellas?|"
                           r"estrelas?|分|星)?")
_STRIP: Final = re.compile(r"[\s!.,;:¡¿?？！。，~\-]+")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def parse_rating(text: str, scale: Scale) -> int | None:
    """The rating a message is (1..5, thumbs as 5 / 1), or None when it is not only a
    rating. Thumbs on a five-point survey and digits on a thumbs survey are understood too:
    buyers answer the way they like."""
    if not text or len(text) > 40:
        return None
    folded = _STRIP.sub(" ", _fold(text)).strip()
    # Emoji variation selectors and skin tones do not change the meaning.
    folded = re.sub("[\ufe0f\U0001f3fb-\U0001f3ff]", "", folded).strip()
    if not folded:
        return None
    if all(c in _THUMBS_UP or c == " " for c in folded):
        return 5
    if all(c in _THUMBS_DOWN or c == " " for c in folded):
        return 1
    if _STARS.fullmatch(folded.replace(" ", "")):
        return len(folded.replace(" ", ""))
    match = _DIGIT.fullmatch(folded)
    if match:
        return int(match.group(1))
    word = folded.removesuffix("分").removesuffix("星").strip()
    if word in _NUMBER_WORDS or f"{word} " in _NUMBER_WORDS:
        return _NUMBER_WORDS.get(word) or _NUMBER_WORDS[f"{word} "]
    if folded in _GOOD:
        return 5
    if folded in _BAD:
        return 1
    return None


def satisfied(score: int) -> bool:
    """4 and 5 of five, or a thumbs up: the usual CSAT definition (share of happy answers)."""
    return score >= 4


# -- the question, per language --------------------------------------------------------

DEFAULT_WORDING: Final[dict[Scale, dict[str, str]]] = {
    "five": {
        "en": "How did we do? Reply with a number from 1 (bad) to 5 (great).",
        "es": "¿Cómo lo hicimos? Responde con un número del 1 (mal) al 5 (excelente).",
        "pt": "Como foi o nosso atendimento? Responda com um número de 1 (ruim) a 5 (ótimo).",
        "zh": "您对我们的服务满意吗？请回复 1（很差）到 5（很好）之间的数字。",
    },
    "thumbs": {
        "en": "Did we solve your problem? Reply 👍 or 👎.",
        "es": "¿Resolvimos tu problema? Responde 👍 o 👎.",
        "pt": "Resolvemos o seu problema? Responda 👍 ou 👎.",
        "zh": "我们解决您的问题了吗？请回复 👍 或 👎。",
    },
}


def question(scale: Scale, language: str | None, wording: dict[str, str]) -> str:
    """The configured wording for the language, else the default, else English."""
    lang = (language or "en").lower()
    return (wording.get(lang) or DEFAULT_WORDING[scale].get(lang)
            or wording.get("en") or DEFAULT_WORDING[scale]["en"])
