"""Language identification and hint fusion on short buyer messages."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.classify.language import (
    DEFAULT_MIN_CONFIDENCE,
    LanguageGuess,
    LanguageIdentifier,
    language_from_hint,
)

CONFIGURED = ("es", "pt", "en", "fr", "de", "it", "zh")


@pytest.fixture(scope="module")
def ident() -> LanguageIdentifier:
    return LanguageIdentifier(CONFIGURED)


# Buyer messages as they arrive on Mercado Libre, Amazon, WhatsApp and shop chats.
SHORT_MESSAGES = [
    ("es", "Hola, ¿dónde está mi pedido?"),
    ("es", "¿Tienen en talla M?"),
    ("es", "Buenas tardes, todavía no me llega el paquete"),
    ("es", "Quiero devolver el producto, vino roto"),
    ("es", "¿Hacen envíos a Monterrey?"),
    ("es", "Gracias, ya lo recibí"),
    ("es", "¿Cuándo llega mi compra?"),
    ("pt", "Olá, cadê meu pedido?"),
    ("pt", "Vocês têm no tamanho G?"),
    ("pt", "Ainda não recebi minha encomenda"),
    ("pt", "Quero devolver, veio com defeito"),
    ("pt", "Qual o prazo de entrega para São Paulo?"),
    ("pt", "Obrigado, já recebi o produto"),
    ("pt", "Não consigo rastrear o pedido"),
    ("en", "Where is my order?"),
    ("en", "I want a refund, the item arrived broken"),
    ("en", "The charger doesn't work anymore"),
    ("fr", "Bonjour, où est ma commande ?"),
    ("fr", "Je voudrais être remboursé, le colis est arrivé abîmé"),
    ("de", "Wo ist meine Bestellung?"),
    ("de", "Das Paket ist noch nicht angekommen"),
    ("it", "Dov'è il mio ordine?"),
    ("it", "Il pacco non è ancora arrivato"),
    ("zh", "你好，我的订单在哪里？"),
    ("zh", "这个有蓝色的吗"),
]


@pytest.mark.parametrize(("expected", "text"), SHORT_MESSAGES)
def test_short_buyer_messages_are_identified_from_text_alone(
    ident: LanguageIdentifier, expected: str, text: str
) -> None:
    guess = ident.identify(text)
    assert guess.language == expected
    assert guess.source == "text"
    assert guess.confidence >= DEFAULT_MIN_CONFIDENCE
    assert guess.candidates[0][0] == expected


def test_a_short_question_ranks_right_but_needs_the_hint(ident: LanguageIdentifier) -> None:
    # Four common words spread over seven languages: ranked first, not enough to decide.
    bare = ident.identify("Does it come in blue?")
    assert bare.candidates[0][0] == "en"
    assert bare.source == "none"
    assert ident.identify("Does it come in blue?", hint="en-US").language == "en"


def test_a_word_shared_by_spanish_and_portuguese_is_left_to_the_hint() -> None:
    ident = LanguageIdentifier(["es", "pt", "en"])
    assert ident.identify("pedido", hint="es-MX").language == "es"
    assert ident.identify("pedido", hint="pt-BR").language == "pt"
    assert ident.identify("pedido").source == "none"


def test_spanish_and_portuguese_short_questions_are_told_apart(ident: LanguageIdentifier) -> None:
    spanish = ident.identify("Hola, ¿dónde está mi pedido?")
    portuguese = ident.identify("Olá, cadê meu pedido?")
    assert (spanish.language, portuguese.language) == ("es", "pt")
    assert dict(spanish.candidates)["es"] > 0.9
    assert dict(portuguese.candidates)["pt"] > 0.9


def test_candidates_are_the_evidence_best_first(ident: LanguageIdentifier) -> None:
    guess = ident.identify("Quiero devolver el producto, vino roto")
    scores = [score for _, score in guess.candidates]
    assert 1 <= len(guess.candidates) <= 3
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < score <= 1.0 for score in scores)
    assert {code for code, _ in guess.candidates} <= set(CONFIGURED)


def test_spanish_only_punctuation_settles_an_ambiguous_phrase(ident: LanguageIdentifier) -> None:
    # "y mi pedido" is nearly as Portuguese-looking as Spanish; "¿" is not.
    plain = dict(ident.text_scores("y mi pedido"))
    marked = dict(ident.text_scores("¿y mi pedido?"))
    assert marked["es"] > plain["es"]
    assert ident.identify("¿y mi pedido?").language == "es"


class TestHintFusion:
    def test_short_ambiguous_text_is_decided_by_the_hint(self, ident: LanguageIdentifier) -> None:
        guess = ident.identify("ok", hint="pt-BR")
        assert guess == LanguageGuess("pt", 0.5, "hint", guess.candidates)
        assert guess.candidates[0][0] != "pt"
        assert guess.candidates  # the weak text evidence is still recorded

    def test_confident_text_beats_a_wrong_hint(self, ident: LanguageIdentifier) -> None:
        guess = ident.identify("Hola, ¿dónde está mi pedido? Lo compré hace dos semanas", "pt-BR")
        assert guess.language == "es"
        assert guess.source == "text"

    def test_agreeing_text_and_hint_boost_confidence(self, ident: LanguageIdentifier) -> None:
        alone = ident.identify("Gracias, ya lo recibí")
        fused = ident.identify("Gracias, ya lo recibí", hint="es-MX")
        assert fused.language == alone.language == "es"
        assert fused.source == "text+hint"
        assert fused.confidence > alone.confidence

    def test_weak_text_agreeing_with_hint_is_text_plus_hint(
        self, ident: LanguageIdentifier
    ) -> None:
        top = ident.identify("gracias").candidates[0]
        guess = ident.identify("gracias", hint="es")
        assert guess.language == "es"
        assert guess.source == "text+hint"
        assert guess.confidence > top[1]

    @pytest.mark.parametrize("hint", ["ru", "xx", "", "und", "!!", None])
    def test_unusable_hint_and_no_confident_text_fall_to_default(self, hint: str | None) -> None:
        ident = LanguageIdentifier(["es", "pt", "en"], default="es")
        guess = ident.identify("mi pedido", hint=hint)
        assert (guess.language, guess.source, guess.confidence) == ("es", "default", 0.0)

    def test_nothing_to_go_on_abstains(self, ident: LanguageIdentifier) -> None:
        guess = ident.identify("12345 😀", hint="ru")
        assert guess == LanguageGuess(None, 0.0, "none", ())

    def test_empty_text_with_hint_uses_the_hint(self, ident: LanguageIdentifier) -> None:
        assert ident.identify("", hint="zh-Hans-CN") == LanguageGuess("zh", 0.5, "hint", ())


class TestConfiguration:
    def test_languages_are_normalised_and_deduplicated(self) -> None:
        ident = LanguageIdentifier(["es-MX", "pt_BR", "es", "EN"])
        assert ident.languages == ("es", "pt", "en")

    def test_candidates_never_leave_the_configured_set(self) -> None:
        ident = LanguageIdentifier(["es", "pt"])
        guess = ident.identify("The parcel has not arrived yet, where is it?")
        assert guess.language in {"es", "pt", None}
        assert {code for code, _ in guess.candidates} <= {"es", "pt"}

    def test_a_single_language_answers_every_message(self) -> None:
        ident = LanguageIdentifier(["es"])
        assert ident.identify("hello there") == LanguageGuess("es", 0.0, "default", ())

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"languages": []}, "at least one"),
            ({"languages": ["klingon"]}, "ISO 639-1"),
            ({"languages": ["xx"]}, "lingua"),
            ({"languages": ["es"], "min_confidence": 1.5}, "min_confidence"),
            ({"languages": ["es", "pt"], "default": "en"}, "default"),
        ],
    )
    def test_bad_configuration_is_rejected(self, kwargs: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            LanguageIdentifier(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("pt-BR", "pt"),
        ("pt_br", "pt"),
        ("es-419", "es"),
        ("zh-Hans-CN", "zh"),
        ("en_US.UTF-8", "en"),
        ("FR", "fr"),
        ("por", "pt"),
        ("spa", "es"),
        ("iw", "he"),
        ("  de-AT ", "de"),
        ("und", None),
        ("C.UTF-8", None),
        ("english", None),
        ("", None),
        (None, None),
        ("12", None),
    ],
)
def test_language_from_hint(hint: str | None, expected: str | None) -> None:
    assert language_from_hint(hint) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " \t\n ",
        "😀🙏👍" * 100,
        "0123456789" * 100,
        "\x00\x01\x02\x1b[31m\x7f",
        "abc \ud800 def \udfff",
        "Olá, cadê meu pedido? " * 50_000,
        "https://example.com/order/123 buyer@example.com @seller",
        "\u202e\u200b\ufeff",
    ],
)
def test_hostile_input_never_raises(ident: LanguageIdentifier, text: str) -> None:
    guess = ident.identify(text, hint="pt-BR")
    assert guess.language in {*CONFIGURED, None}
    assert 0.0 <= guess.confidence <= 1.0


def test_huge_message_is_identified_from_its_beginning(ident: LanguageIdentifier) -> None:
    text = "Olá, cadê meu pedido? " + "x" * 1_000_000
    assert ident.identify(text).language == "pt"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=300), hint=st.one_of(st.none(), st.text(max_size=20)))
def test_any_string_gives_a_well_formed_guess(
    ident: LanguageIdentifier, text: str, hint: str | None
) -> None:
    guess = ident.identify(text, hint)
    assert guess.source in {"text", "hint", "text+hint", "default", "none"}
    assert guess.language in {*CONFIGURED, None}
    assert 0.0 <= guess.confidence <= 1.0
    assert (guess.language is None) == (guess.source == "none")
