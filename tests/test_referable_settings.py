"""Ids that are not secrets but that operators keep per environment (WhatsApp's
``phone_number_id``, Twilio's ``account_sid``, ``from_number``, ``messaging_service_sid``) may
be written literally or as ``env:NAME`` / ``file:PATH`` (issue 15's handles), through the
same loader ``serve`` and ``check`` use."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import ConfigError, load_config

CHANNELS = """
[hub]
data_dir = "{data}"
public_url = "https://hub.example"

[[channels]]
name = "wa"
type = "whatsapp"
[channels.settings]
access_token = "env:IH_WA_TOKEN"
app_secret = "env:IH_WA_SECRET"
verify_token = "env:IH_WA_VERIFY"
phone_number_id = "{phone}"

[[channels]]
name = "sms"
type = "twilio"
[channels.settings]
account_sid = "{sid}"
auth_token = "env:IH_TW_TOKEN"
from_number = "{number}"
"""


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IH_WA_TOKEN", "IH_WA_SECRET", "IH_WA_VERIFY", "IH_TW_TOKEN"):
        monkeypatch.setenv(name, "s3cret-" + "x" * 30)


def write(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "inboxhub.toml"
    path.write_text(CHANNELS.format(data=tmp_path / "data", **values))
    return path


def test_literal_and_referenced_ids_load_the_same(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sid = "AC" + "0123456789abcdef" * 2
    literal = load_config(write(tmp_path, phone="106540352242922", sid=sid,
                                number="+34911000000"))
    monkeypatch.setenv("IH_WA_PHONE", "106540352242922")
    (tmp_path / "sid").write_text(sid + "\n")
    monkeypatch.setenv("IH_TW_FROM", "+34911000000")
    referenced = load_config(write(tmp_path, phone="env:IH_WA_PHONE",
                                   sid=f"file:{tmp_path / 'sid'}", number="env:IH_TW_FROM"))
    for name in ("wa", "sms"):
        assert literal.channel_settings[name] == referenced.channel_settings[name]


def test_a_missing_reference_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"channels\[0\]\.settings\.phone_number_id: "
                                          r"environment variable IH_NOPE is not set"):
        load_config(write(tmp_path, phone="env:IH_NOPE", sid="AC" + "0" * 32,
                          number="+34911000000"))
    with pytest.raises(ConfigError, match="account_sid"):  # the value is still validated
        load_config(write(tmp_path, phone="1", sid="not-a-sid", number="+34911000000"))


def test_two_instances_on_one_number_are_refused(tmp_path: Path) -> None:
    sid = "AC" + "0" * 32
    text = CHANNELS.format(data=tmp_path / "data", phone="106540352242922", sid=sid,
                           number="+34911000000")
    second = text.split("[[channels]]")[1].replace('name = "wa"', 'name = "wa2"')
    path = tmp_path / "twice.toml"
    path.write_text(text + "\n[[channels]]" + second)
    with pytest.raises(ConfigError, match=r"channels\[2\]\.settings\.phone_number_id: channel "
                                          r"wa already has this phone_number_id"):
        load_config(path)
