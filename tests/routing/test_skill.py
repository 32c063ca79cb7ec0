"""Skill rules: accents, priorities, entry points, the recorded rule and config validation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.classify.skill import ENTRY_POINT_RULE, SkillClassifier, SkillGuess, SkillRule

_DEFAULT = SkillClassifier.default()


@pytest.fixture(scope="module")
def default() -> SkillClassifier:
    return _DEFAULT


BUYER_MESSAGES = [
    ("es", "Hola, ¿dónde está mi pedido?", "shipping", "es.shipping.pedido"),
    ("es", "HOLA DONDE ESTA MI PEDIDO", "shipping", "es.shipping.pedido"),
    ("es", "El paquete no llegó", "shipping", "es.shipping.pedido"),
    ("es", "Quiero la devolucion del dinero", "refund", "es.refund.devolucion"),
    ("es", "¿Me pueden hacer el reembolso?", "refund", "es.refund.devolucion"),
    ("es", "Voy a abrir un reclamo en Profeco", "dispute", "es.dispute.reclamo"),
    ("es", "Ya pedí mediación", "dispute", "es.dispute.reclamo"),
    ("es", "La bocina no enciende", "technical", "es.technical.no-funciona"),
    ("es", "¿Tienen en talla M?", "presale", "es.presale.consulta"),
    ("pt", "Olá, cadê meu pedido?", "shipping", "pt.shipping.pedido"),
    ("pt", "Qual o código de rastreio?", "shipping", "pt.shipping.pedido"),
    ("pt", "Quero devolução e reembolso", "refund", "pt.refund.devolucao"),
    ("pt", "Vou no Procon e no Reclame Aqui", "dispute", "pt.dispute.reclamacao"),
    ("pt", "O fone não liga", "technical", "pt.technical.nao-funciona"),
    ("pt", "Tem no tamanho 42?", "presale", "pt.presale.duvida"),
    ("en", "Where is my order?", "shipping", "en.shipping.where-is-my-order"),
    ("en", "I want a refund", "refund", "en.refund.return"),
    ("en", "It arrived broken", "refund", "en.refund.return"),
    ("en", "The remote doesn’t work", "technical", "en.technical.not-working"),
    ("en", "Does it come in red?", "presale", "en.presale.question"),
    ("en", "I opened an A-to-Z claim", "dispute", "en.dispute.claim"),
]


@pytest.mark.parametrize(("language", "text", "skill", "rule"), BUYER_MESSAGES)
def test_default_rules_on_buyer_messages(
    default: SkillClassifier, language: str, text: str, skill: str, rule: str
) -> None:
    guess = default.classify(text, language)
    assert (guess.skill, guess.rule) == (skill, rule)
    assert guess.matched is not None


def test_accents_and_case_are_ignored_and_the_keyword_is_recorded(
    default: SkillClassifier,
) -> None:
    guess = default.classify("quiero una DEVOLUCION", "es")
    assert guess == SkillGuess("refund", "es.refund.devolucion", "devolución")
    assert default.classify("cade meu pedido", "pt").matched == "cadê meu pedido"


def test_keywords_match_whole_words_only(default: SkillClassifier) -> None:
    # "precios" must not fire "precio"... it is a different word; "reembolsos" likewise.
    assert default.classify("los precios bajaron", "es") == SkillGuess(None)
    assert default.classify("mi pedido", "es").skill == "shipping"
    assert default.classify("mipedido", "es") == SkillGuess(None)


@pytest.mark.parametrize(
    ("language", "text", "skill"),
    [
        ("es", "¿Dónde está mi pedido? Si no llega abro un reclamo", "dispute"),
        ("es", "No llegó, quiero el reembolso", "refund"),
        ("pt", "Cadê meu pedido? Quero cancelar", "refund"),
        ("en", "Where is my order? I'll leave a negative review", "dispute"),
        ("en", "Do you have it in blue? Mine arrived and doesn't work", "technical"),
        ("en", "Is it in stock? Also where is my order", "shipping"),
    ],
)
def test_dispute_beats_refund_beats_shipping_beats_presale(
    default: SkillClassifier, language: str, text: str, skill: str
) -> None:
    assert default.classify(text, language).skill == skill


def test_rules_of_the_message_language_apply_then_neutral_ones(default: SkillClassifier) -> None:
    # Portuguese vocabulary does not fire on a message identified as English...
    assert default.classify("cadê meu pedido", "en") == SkillGuess(None)
    # ...but language-neutral rules do, whatever the language.
    assert default.classify("remboursement? refund?", "fr").rule == "any.refund.refund"
    # An unknown language lets every language's rules speak.
    assert default.classify("cadê meu pedido", None).rule == "pt.shipping.pedido"
    # Locale-style codes are accepted.
    assert default.classify("cadê meu pedido", "pt-BR").rule == "pt.shipping.pedido"


def test_language_rule_wins_a_tie_with_a_neutral_rule() -> None:
    classifier = SkillClassifier(
        [
            SkillRule("any.refund", "refund", None, ("refund",), 40),
            SkillRule("en.refund", "refund", "en", ("refund",), 40),
        ]
    )
    assert classifier.classify("refund please", "en").rule == "en.refund"
    assert classifier.classify("refund please", "es").rule == "any.refund"


class TestEntryPoint:
    def test_entry_point_decides_without_keywords(self, default: SkillClassifier) -> None:
        assert default.classify("hola", "es", entry_point_skill="presale") == SkillGuess(
            "presale", ENTRY_POINT_RULE, None
        )

    def test_stronger_keyword_overrides_a_weaker_entry_point(
        self, default: SkillClassifier
    ) -> None:
        guess = default.classify("abriré un reclamo", "es", entry_point_skill="presale")
        assert (guess.skill, guess.rule) == ("dispute", "es.dispute.reclamo")

    def test_stronger_entry_point_overrides_a_weaker_keyword(
        self, default: SkillClassifier
    ) -> None:
        guess = default.classify("any news on my order?", "en", entry_point_skill="refund")
        assert guess == SkillGuess("refund", ENTRY_POINT_RULE, None)

    def test_nothing_matches(self, default: SkillClassifier) -> None:
        assert default.classify("thanks!", "en") == SkillGuess(None, None, None)


def test_cjk_keywords_match_without_word_boundaries() -> None:
    classifier = SkillClassifier.from_config(
        {
            "priority": {"refund": 40},
            "rule": [
                {"name": "zh.refund", "skill": "refund", "language": "zh", "keywords": ["退款"]}
            ],
        }
    )
    assert classifier.classify("你好我要退款谢谢", "zh").rule == "zh.refund"


def test_rule_priority_defaults_to_the_skill_priority() -> None:
    classifier = SkillClassifier.from_config(
        {
            "priority": {"shipping": 20, "refund": 40},
            "rule": [
                {"name": "a", "skill": "shipping", "keywords": ["parcel"], "priority": 99},
                {"name": "b", "skill": "refund", "keywords": ["refund"]},
            ],
        }
    )
    assert [rule.priority for rule in classifier.rules] == [99, 40]
    assert classifier.classify("parcel refund", "en").rule == "a"


def test_default_rules_load_from_the_package(default: SkillClassifier) -> None:
    skills = {rule.skill for rule in default.rules}
    assert skills == {"presale", "shipping", "refund", "dispute", "technical"}
    assert {rule.language for rule in default.rules} == {"es", "pt", "en", None}


VALID_RULE: dict[str, Any] = {"name": "es.x", "skill": "refund", "keywords": ["reembolso"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"\(root\): Object missing required field `rule`"),
        ({"rule": "x"}, r"^rule: Expected `array`"),
        ({"rule": [{**VALID_RULE, "skill": 3}]}, r"^rule\[0\]\.skill: Expected `str`"),
        ({"rule": [{**VALID_RULE, "keyword": ["x"]}]}, r"^rule\[0\]: .*unknown field `keyword`"),
        ({"rule": [VALID_RULE, {**VALID_RULE, "keywords": []}]}, r"^rule\[1\]\.name"),
        (
            {"rule": [VALID_RULE, {**VALID_RULE, "name": "b", "keywords": []}]},
            r"^rule\[1\]\.keywords: expected a non-empty list",
        ),
        ({"rule": [{**VALID_RULE, "keywords": ["ok", "  "]}]}, r"^rule\[0\]\.keywords"),
        ({"rule": [{**VALID_RULE, "language": "spanish"}]}, r"^rule\[0\]\.language"),
        ({"rule": [{**VALID_RULE, "name": "Bad Name"}]}, r"^rule\[0\]\.name"),
        (
            {"priority": {"refund": 1}, "rule": [{**VALID_RULE, "skill": "refnd"}]},
            r"^rule\[0\]\.skill: unknown skill 'refnd'; expected one of refund",
        ),
        (
            {"priority": {"refund": "high"}, "rule": [VALID_RULE]},
            r"^priority\.refund: Expected `int`",
        ),
    ],
)
def test_bad_config_names_the_key_path(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SkillClassifier.from_config(data)


def test_error_path_carries_the_callers_prefix() -> None:
    with pytest.raises(ValueError, match=r"^routing\.skills\.rule\[0\]\.skill: Expected `str`"):
        SkillClassifier.from_config({"rule": [{**VALID_RULE, "skill": 1}]}, path="routing.skills")


@pytest.mark.parametrize(
    "text",
    ["", "\x00\x1b[2J", "😀" * 10_000, "dónde " * 200_000, "\ud800", "(((((((((("],
)
def test_hostile_input_never_raises(default: SkillClassifier, text: str) -> None:
    guess = default.classify(text, "es")
    assert guess.skill in {None, "presale", "shipping", "refund", "dispute", "technical"}


@settings(deadline=None)
@given(text=st.text(max_size=200), language=st.one_of(st.none(), st.text(max_size=8)))
def test_any_input_gives_a_well_formed_guess(text: str, language: str | None) -> None:
    guess = _DEFAULT.classify(text, language)
    assert (guess.skill is None) == (guess.rule is None)
