"""Random damage to real-shaped messages: parse_email returns a ParsedEmail or raises
MalformedEmail, never anything else."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.email.mime import MalformedEmail, ParsedEmail, parse_email
from tests.channels.email.test_cpython_corpus import CORPUS

SEEDS = [path.read_bytes() for path in sorted((Path(__file__).parent / "fixtures").glob("*.eml"))]
SEEDS += [path.read_bytes() for path in CORPUS]  # CPython's messages, when installed
JUNK = st.sampled_from([b"\r\n", b"\n\n", b"--", b"--b1", b"--alt--", b"=?", b"?=", b"=?utf-8?b?",
                        b"=?x-bad?q?", b"\xff\xfe", b"\x00", b":", b";", b"\"", b"<", b">",
                        b"Content-Type: multipart/mixed; boundary=\"alt\"\r\n",
                        b"Content-Transfer-Encoding: base64\r\n", b"charset=\"", b"=\r\n"])


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 12))):
        at = draw(st.integers(0, len(raw)))
        if draw(st.booleans()):
            raw[at:at] = draw(JUNK)
        else:
            del raw[at:at + draw(st.integers(1, 40))]
    return bytes(raw)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_messages_parse_or_are_refused_with_a_reason(raw: bytes) -> None:
    try:
        parsed = parse_email(raw, max_attachment_bytes=100_000, max_attachments=5)
    except MalformedEmail as refused:
        assert refused.reason
    else:
        assert isinstance(parsed, ParsedEmail) and len(parsed.content_digest) == 64


def _via_getaddresses(value: str) -> list[tuple[str, str]]:
    from email.utils import getaddresses
    return [(n.strip(), a.strip()) for n, a in getaddresses([value]) if "@" in a]


_ATOMS = st.text("abcXYZ019.!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
_WORDS = st.text("AnaPérzJoãoç李明 .,\"'()<>@:;\\", min_size=0, max_size=12)


@settings(max_examples=3000, deadline=None)
@given(local=_ATOMS, domain=st.text("abc019.-", min_size=1, max_size=10), name=_WORDS,
       shape=st.sampled_from(["bare", "named", "tight", "padded", "noise"]),
       noise=st.text(" <>@,\"()a.\t", max_size=4))
def test_the_address_shortcut_answers_as_getaddresses(local: str, domain: str, name: str,
                                                      shape: str, noise: str) -> None:
    """Every value the shortcut reads, getaddresses reads the same way; the rest it leaves."""
    from channels.email.mime import simple_address
    value = {"bare": f"{local}@{domain}", "named": f"{name} <{local}@{domain}>",
             "tight": f"{name}<{local}@{domain}>", "padded": f"  {name}  <{local}@{domain}> ",
             "noise": f"{name}{noise}<{local}@{domain}>{noise}"}[shape]
    simple = simple_address(value)
    if simple is not None:
        assert [simple] == _via_getaddresses(value), value


def test_the_address_shortcut_reads_the_common_forms() -> None:
    from channels.email.mime import simple_address
    assert simple_address("ana@buyer.test") == ("", "ana@buyer.test")
    assert simple_address("Ana Pérez <ana.perez@buyer.test>") == ("Ana Pérez",
                                                                   "ana.perez@buyer.test")
    assert simple_address("李明 <li@shop.cn>") == ("李明", "li@shop.cn")
    # quoted names, comments, groups, lists: left to getaddresses
    for value in ('"Pérez, Ana" <ana@b.test>', "ana@b.test (Ana)", "a@b.test, c@d.test",
                  "undisclosed-recipients:;", "Ana <ana@b.test> <x@y.test>"):
        assert simple_address(value) is None, value


def _stdlib_params(part: object) -> tuple[str | None, str | None]:
    """What ``mime._Params`` replaces: ``get_filename`` with the ``name`` fallbacks and
    ``get_param("charset")``, each reading the header again."""
    from email.message import Message

    from channels.email.mime import decode_header_value

    assert isinstance(part, Message)

    def param(name: str) -> str | None:
        try:
            value = part.get_param(name)
        except Exception:
            return None
        if isinstance(value, tuple):
            value = value[2]
        return str(value) if value is not None else None

    try:
        name = part.get_filename()
    except Exception:
        name = param("name")
    if not name:
        name = param("name")
    return (decode_header_value(str(name)) if name else None), param("charset")


def _parts(raw: bytes) -> list[object]:
    from email.parser import BytesParser

    from channels.email.mime import _POLICY

    try:
        message = BytesParser(policy=_POLICY).parsebytes(raw)
        return list(message.walk())[:200]
    except Exception:
        return []


def _check_params(raw: bytes) -> None:
    from channels.email.mime import _Params

    for part in _parts(raw):
        params = _Params(part)  # type: ignore[arg-type]
        assert (params.filename(), params.get("charset")) == _stdlib_params(part)


def test_parameters_read_once_answer_as_the_stdlib_on_every_seed_part() -> None:
    tricky = (b"Content-Type: text/plain; charset=\"utf-8\"; NAME*=utf-8''r%C3%A9sum%C3%A9.txt;"
              b" name=second\r\nContent-Disposition: attachment; filename=\"\"; FileName=x\r\n"
              b"\r\nbody\r\n")
    for raw in [*SEEDS, tricky]:
        _check_params(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_parameters_read_once_answer_as_the_stdlib_on_damaged_parts(raw: bytes) -> None:
    _check_params(raw)
