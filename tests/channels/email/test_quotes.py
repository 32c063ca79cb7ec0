"""Quoted history and signatures are cut for display, in every language buyers write."""

from __future__ import annotations

import pytest

from channels.email.quotes import MAX_INPUT_CHARS, strip_quotes

NEW = "Hola, ¿cuándo llega mi pedido?"

CASES = {
    "gmail_en": f"{NEW}\n\nOn Mon, Jan 8, 2024 at 10:00 AM Shop <shop@example.com> wrote:\n> old",
    "gmail_en_wrapped": f"{NEW}\n\nOn Mon, Jan 8, 2024 at 10:00 AM Shop Support\n"
                        "<shop@example.com> wrote:\n> old",
    "gmail_es": f"{NEW}\n\nEl lun, 8 ene 2024 a las 10:00, Tienda (<t@example.com>) escribió:\n"
                "> viejo",
    "gmail_pt": f"{NEW}\n\nEm seg., 8 de jan. de 2024 às 10:00, Loja <l@example.com> escreveu:\n"
                "> antigo",
    "zh": f"{NEW}\n\n在 2024年1月8日 周一 10:00，店铺 <s@example.com> 写道：\n> 旧的",
    "fr": f"{NEW}\n\nLe lun. 8 janv. 2024 à 10:00, Boutique <b@example.com> a écrit :\n> ancien",
    "de": f"{NEW}\n\nAm Mo., 8. Jan. 2024 um 10:00 Uhr schrieb Laden <l@example.com>:\n"
          "> alt",
    "outlook_en": f"{NEW}\n\n________________________________\nFrom: Shop <shop@example.com>\n"
                  "Sent: Monday, January 8, 2024 10:00 AM\nTo: Buyer\nSubject: order\n\nold text",
    "outlook_es": f"{NEW}\n\nDe: Tienda <t@example.com>\nEnviado: lunes, 8 de enero de 2024\n"
                  "Para: Comprador\nAsunto: pedido\n\ntexto viejo",
    "outlook_de": f"{NEW}\n\nVon: Laden <l@example.com>\nGesendet: Montag, 8. Januar 2024\n"
                  "An: Käufer\n\nalter Text",
    "outlook_zh": f"{NEW}\n\n发件人: 店铺 <s@example.com>\n发送时间: 2024年1月8日 10:00\n"
                  "收件人: 买家\n\n旧的",
    "original_message": f"{NEW}\n\n-----Original Message-----\nFrom: x\nold",
    "mensaje_original": f"{NEW}\n\n----- Mensaje original -----\nviejo",
    "mensagem_original": f"{NEW}\n\n-------- Mensagem original --------\nantigo",
    "signature": f"{NEW}\n-- \nJuan Pérez\nCEO, Example S.L.",
    "iphone_en": f"{NEW}\n\nSent from my iPhone",
    "iphone_es": f"{NEW}\n\nEnviado desde mi iPhone\n\nEl lun, 8 ene 2024, X escribió:\n> y",
    "iphone_pt": f"{NEW}\n\nEnviado do meu iPhone",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_history_and_signatures_are_cut(name: str) -> None:
    assert strip_quotes(CASES[name]) == NEW


def test_inline_answers_between_quotes_are_kept() -> None:
    text = "> Which size?\nXL please\n> Which colour?\nBlue"
    assert strip_quotes(text) == "XL please\nBlue"


def test_a_body_line_starting_like_a_header_is_kept() -> None:
    text = "On Monday I ordered two.\nDe: nada, just one thing: the colour."
    assert strip_quotes(text) == text


def test_only_a_quote_is_shown_whole_rather_than_empty() -> None:
    text = "> everything quoted\n> nothing new"
    assert strip_quotes(text) == text


def test_input_is_bounded() -> None:
    huge = "a" * (MAX_INPUT_CHARS + 10) + "\nOn x wrote:"
    assert len(strip_quotes(huge)) == MAX_INPUT_CHARS


def test_hostile_lines_stay_linear() -> None:
    # Shapes that make a naive "On .* wrote:" regex backtrack; a linear scan finishes at once.
    hostile = ("On " + "x " * 200_000 + "\n") * 3 + ("De: " + ":" * 100_000 + "\n") * 3
    assert strip_quotes(hostile).startswith("On x")
