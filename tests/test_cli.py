"""The ``inboxhub`` CLI: ``check`` names the file and key path of a config error; the operator
views (``quarantine list``, ``dlq list``, ``dlq retry``) read and act on the hub's real data.

The CLI runs in-process through ``hub.cli.main``; commands that open Redis call
``asyncio.run`` and so run in a worker thread while the test's loop keeps serving the hub.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from channels.registry import load_adapter_class
from channels.secrets import Secret
from channels.telegram.settings import TelegramSettings
from hub.cli import main
from hub.config import LoadedConfig, load_config
from storage.store import Store
from tests.conftest import ADMIN_TOKEN, RedisServer, write_config
from tests.helpers import (
    OperatorEndpoint,
    auth,
    eventually,
    running_hub,
    sign,
    signed_post_args,
)

# -- check ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_implicit_loop() -> None:
    """conftest's ``_no_leftover_tasks`` calls ``get_event_loop()`` after each test; after a
    sync test that runs before any async one, that silently creates an event loop nobody
    closes (a ResourceWarning, an error under filterwarnings=error). Marking the loop as set
    makes that call raise instead, which the fixture handles."""
    asyncio.set_event_loop(None)



@pytest.fixture
def valid_text(tmp_path: Path, redis_server: RedisServer, hub_env: None) -> str:
    return write_config(tmp_path, redis_server.url).read_text()


def run_check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    code = main(["check", "--config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_valid_config(tmp_path: Path, valid_text: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.toml"
    path.write_text(valid_text)
    code, out, err = run_check(capsys, path)
    assert code == 0, err
    assert "OK" in out and str(path) in out
    assert "shop (api)" in out


def test_check_accepts_config_before_the_subcommand(
    tmp_path: Path, valid_text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "good.toml"
    path.write_text(valid_text)
    assert main(["--config", str(path), "check"]) == 0
    assert "OK" in capsys.readouterr().out


CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
EXAMPLES = sorted(CONFIG_DIR.glob("*.toml"))
# ${NAME} / ${NAME:-default}, as hub.config interpolates plain values.
_INTERPOLATED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def example_env(path: Path) -> tuple[dict[str, str], set[str]]:
    """The ``env:NAME`` secrets a config file references (each given a distinct 40-character
    value of [0-9a-f], which every secret's alphabet and length rule accepts), and the
    ``${NAME}`` variables its plain values read."""
    values = list(_strings(tomllib.loads(path.read_text(encoding="utf-8"))))
    secrets = {v.removeprefix("env:") for v in values if v.startswith("env:")}
    plain = {m.group(1) for v in values for m in _INTERPOLATED.finditer(v)}
    return ({name: hashlib.sha256(name.encode()).hexdigest()[:40] for name in sorted(secrets)},
            plain)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_check_example_config(example: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """Every shipped example validates with the environment its comments ask for: the
    ``env:`` secrets set, the ``${NAME:-default}`` values left to their defaults; through
    the loader (each channel's settings are its adapter's, each secret the variable's value)
    and through ``inboxhub check``, which names every channel."""
    secrets, plain = example_env(example)
    assert "INBOXHUB_ADMIN_TOKEN" in secrets
    for name in plain:
        monkeypatch.delenv(name, raising=False)
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)

    loaded = load_config(example)
    channels = loaded.config.channels
    assert channels
    resolved: dict[str, str] = {}
    for channel in channels:
        settings = loaded.channel_settings[channel.name]
        assert isinstance(settings, load_adapter_class(channel.type).settings_type)
        for field in msgspec.structs.fields(settings):
            value = getattr(settings, field.name)
            if isinstance(value, Secret):
                resolved[value.source] = value.reveal()
    hub_secrets = [t.token for t in loaded.config.api.tokens]
    hub_secrets.append(loaded.config.storage.redis_password)
    for secret in hub_secrets:
        if secret is not None:
            resolved[secret.source] = secret.reveal()
    assert resolved == {f"env:{name}": value for name, value in secrets.items()}

    code, out, err = run_check(capsys, example)
    assert code == 0, err
    assert f"{example}: OK" in out
    for channel in channels:
        assert f"{channel.name} ({channel.type})" in out


def test_example_chat_polling_alternative(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The Telegram polling lines example-chat.toml offers in a comment are valid settings:
    uncommented in place of the mode line, the file still checks and the bot polls."""
    example = CONFIG_DIR / "example-chat.toml"
    secrets, _ = example_env(example)
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    text = example.read_text(encoding="utf-8")
    alternative = ['# mode = "polling"', "# long_poll_seconds = 25", "# lease_seconds = 15"]
    mode_line = next(line for line in text.splitlines() if line.startswith('mode = "webhook"'))
    assert all(line in text for line in alternative)
    for line in alternative:
        text = text.replace(line, line.removeprefix("# "), 1)
    path = tmp_path / "example-chat-polling.toml"
    path.write_text(text.replace(mode_line + "\n", "", 1), encoding="utf-8")
    settings = load_config(path).channel_settings["ventas-bot"]
    assert isinstance(settings, TelegramSettings)
    assert settings.mode == "polling" and settings.long_poll_seconds == 25
    code, out, err = run_check(capsys, path)
    assert code == 0, err
    assert "ventas-bot (telegram)" in out


SECOND_CHANNEL = """
[[channels]]
name = "shop"
type = "api"
[channels.settings]
secret = "env:IH_TEST_SECRET"
outbound_url = "http://127.0.0.1:9/other"
"""

# (case id, edit of the valid text, fragments the error must contain after the file name)
BAD_CONFIGS: list[tuple[str, tuple[str, str] | str, Sequence[str]]] = [
    ("wrong-type", ("port = 8080", 'port = "abc"'), ["hub.port", "Expected `int`, got `str`"]),
    ("unknown-key", ("port = 8080", "port = 8080\nprot = 8081"), ["hub", "unknown field `prot`"]),
    ("missing-env-secret", ('secret = "env:IH_TEST_SECRET"', 'secret = "env:IH_TEST_UNSET_X"'),
     ["channels[0].settings", "secret", "IH_TEST_UNSET_X is not set"]),
    ("literal-secret", ('secret = "env:IH_TEST_SECRET"', 'secret = "abc"'),
     ["channels[0].settings", "secret", "not as literal values"]),
    ("invalid-toml", "\n[hub\n", ["invalid TOML"]),
    ("unknown-channel-type", ('type = "api"', 'type = "carrier-pigeon"'),
     ["channels[0].type", "unknown channel type 'carrier-pigeon'"]),
    ("duplicate-channel", SECOND_CHANNEL, ["channels[1].name", "duplicate channel name 'shop'"]),
    ("token-and-digest", ('token = "env:IH_TEST_ADMIN"',
                          'token = "env:IH_TEST_ADMIN"\ntoken_sha256 = "' + "ab" * 32 + '"'),
     ["api.tokens[0]", "exactly one of 'token' or 'token_sha256'"]),
    ("port-out-of-range", ("port = 8080", "port = 70000"), ["hub.port", "1..65535"]),
    ("password-in-url", ("[storage]", '[storage]\nredis_url = "redis://u:pw@127.0.0.1:6379/0"'),
     ["storage.redis_url", "redis_password"]),
    # Each of these passed check before and then crashed serve or silently misrouted.
    ("language-lingua-lacks", "\n[routing]\nlanguages = [\"xx\"]\n",
     ["routing.languages[0]", "unknown language 'xx'"]),
    ("capacity-kind-typo", '\n[[routing.agents]]\nid = "a"\ncapacity = { chta = 4 }\n',
     ["routing.agents[0].capacity.chta", "channels produce: chat, email"]),
    ("rule-never-matches", '\n[[routing.rules]]\nname = "pt"\nqueue = "default"\n'
                           'when = { language = ["portuguese"] }\n',
     ["routing.rules[0].when.language[0]", "can never match"]),
    ("redis-url-scheme", ("[storage]", '[storage]\nredis_url = "http://127.0.0.1:6379"'),
     ["storage.redis_url", "scheme must be redis or rediss or unix"]),
    ("outbound-url", ('outbound_url = "http://127.0.0.1:9/none"', 'outbound_url = "127.0.0.1"'),
     ["channels[0].settings.outbound_url", "malformed URL"]),
    ("unset-env", ('outbound_url = "http://127.0.0.1:9/none"', 'outbound_url = "${IH_NOPE_X}"'),
     ["channels[0].settings.outbound_url", "IH_NOPE_X is not set"]),
    ("short-webhook-secret", ('secret = "env:IH_TEST_SECRET"', 'secret = "env:IH_TEST_SHORT"'),
     ["channels[0].settings.secret", "shorter than 16 characters"]),
    ("routing-mode", "\n[routing]\nmode = \"queue-only\"\n", ["routing.mode", "not implemented"]),
]


@pytest.mark.parametrize(("edit", "expected"), [(e, x) for _, e, x in BAD_CONFIGS],
                         ids=[case for case, _, _ in BAD_CONFIGS])
def test_check_bad_config(tmp_path: Path, valid_text: str, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch,
                          edit: tuple[str, str] | str, expected: Sequence[str]) -> None:
    monkeypatch.setenv("IH_TEST_SHORT", "fifteen-chars-x")
    if isinstance(edit, str):
        text = valid_text + edit
    else:
        old, new = edit
        assert old in valid_text
        text = valid_text.replace(old, new, 1)
        if "redis_url =" in new:  # replace the test redis line rather than adding a second one
            text = "\n".join(line for line in text.splitlines()
                             if not line.startswith('redis_url = "unix://'))
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = run_check(capsys, path)
    assert code == 2, (out, err)
    assert "OK" not in out
    assert f"{path}: " in err, err  # names the file
    message = err.split(f"{path}: ", 1)[1]
    for fragment in expected:
        assert fragment in message, err


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.toml"
    code, _out, err = run_check(capsys, path)
    assert code == 2
    assert f"{path}: file not found" in err


def test_check_secret_value_never_printed(tmp_path: Path, valid_text: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A literal secret is refused without echoing it back."""
    path = tmp_path / "bad.toml"
    path.write_text(valid_text.replace('secret = "env:IH_TEST_SECRET"',
                                       'secret = "hunter2-very-secret"'))
    code, out, err = run_check(capsys, path)
    assert code == 2
    assert "hunter2" not in out + err


def test_check_channel_setting_key_path_is_exact(
    tmp_path: Path, valid_text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(valid_text.replace('secret = "env:IH_TEST_SECRET"', 'secret = "abc"'))
    _code, _out, err = run_check(capsys, path)
    assert f"{path}: channels[0].settings.secret: " in err, err


# -- operator views against a running hub -------------------------------------------------------


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in a thread (it calls asyncio.run) and capture what it printed."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def conversation_of(client: TestClient, sender: str) -> dict[str, Any]:
    resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
    assert resp.status == 200
    found = [c for c in (await resp.json())["conversations"] if c["contact_handle"] == sender]
    assert len(found) == 1
    return found[0]  # type: ignore[no-any-return]


async def test_quarantine_list_shows_malformed_signed_post(
    make_config: Any, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded: LoadedConfig = make_config()
    config = str(loaded.path)
    code, out, _ = await cli(capsys, "quarantine", "list", "--config", config)
    assert code == 0 and "quarantine is empty" in out

    body = b'{"id": "q-1", "text": "no sender field"}'
    async with running_hub(loaded) as client:
        resp = await client.post("/webhooks/api/shop", data=body,
                                 headers={"X-Inboxhub-Signature": sign(body)})
        assert resp.status == 400
        assert "sender" in (await resp.json())["error"]["message"]

        code, out, err = await cli(capsys, "quarantine", "list", "--config", config)
        assert code == 0, err
        [entry] = await store.list_quarantine()
        [line] = out.strip().splitlines()
        assert line.startswith(entry.id)
        assert "shop" in line and "sender" in line and f"[{len(body)} chars]" in line

        code, out, err = await cli(capsys, "quarantine", "list", "--json", "--config", config)
        assert code == 0, err
        [data] = json.loads(out)
        assert data["id"] == entry.id
        assert data["channel_instance"] == "shop"
        assert data["raw"] == body.decode()
        assert "sender" in data["error"]

        # An unsigned body is refused before anything is kept: the quarantine is unchanged.
        resp = await client.post("/webhooks/api/shop", data=b"{not json",
                                 headers={"X-Inboxhub-Signature": sign(b"other")})
        assert resp.status == 401
        code, out, _ = await cli(capsys, "quarantine", "list", "--json", "--config", config)
        assert [e["id"] for e in json.loads(out)] == [entry.id]


async def test_dlq_list_and_retry_delivers_once_endpoint_is_up(
    make_config: Any, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    async with OperatorEndpoint() as operator:
        operator.down = True
        loaded: LoadedConfig = make_config(outbound_url=operator.url)
        config = str(loaded.path)
        code, out, _ = await cli(capsys, "dlq", "list", "--config", config)
        assert code == 0 and "dead-letter queue is empty" in out

        async with running_hub(loaded) as client:
            payload = {"id": "d-1", "sender": "buyer-dlq", "text": "Any news?"}
            resp = await client.post("/webhooks/api/shop", **signed_post_args(payload))
            assert resp.status == 200
            conv = await conversation_of(client, "buyer-dlq")
            resp = await client.post(f"/api/v1/conversations/{conv['id']}/replies",
                                     json={"text": "Tomorrow."}, headers=auth(ADMIN_TOKEN))
            assert resp.status == 202
            reply_id = (await resp.json())["message"]["id"]

            async def failed() -> Any:
                view = await store.get_message(reply_id)
                return view if view is not None and view.status == "failed" else None

            view = await eventually(failed, timeout=15)
            assert view.attempts == 3  # outbox.max_attempts in write_config
            assert "503" in (view.error or "")
            assert operator.received == []

            code, out, err = await cli(capsys, "dlq", "list", "--config", config)
            assert code == 0, err
            [line] = out.strip().splitlines()
            assert line.startswith(reply_id)
            assert "shop" in line and "attempts=3" in line and "503" in line

            code, out, err = await cli(capsys, "dlq", "list", "--json", "--config", config)
            assert code == 0, err
            [entry] = json.loads(out)
            assert entry["message_id"] == reply_id
            assert entry["conversation_id"] == conv["id"]
            assert entry["attempts"] == 3

            operator.down = False
            code, out, err = await cli(capsys, "dlq", "retry", reply_id, "--config", config)
            assert code == 0, err
            assert reply_id in out

            async def sent() -> Any:
                view = await store.get_message(reply_id)
                return view if view is not None and view.status == "sent" else None

            view = await eventually(sent, timeout=15)
            assert view.provider_message_id == "op-1"
            assert view.error is None
            assert operator.reply_ids == [reply_id]
            assert operator.received[0]["text"] == "Tomorrow."

            code, out, _ = await cli(capsys, "dlq", "list", "--config", config)
            assert code == 0 and "dead-letter queue is empty" in out

            # Retrying a reply that is no longer failed is refused and sends nothing.
            code, _out, err = await cli(capsys, "dlq", "retry", reply_id, "--config", config)
            assert code == 1
            assert "not a failed reply" in err
            assert operator.reply_ids == [reply_id]


@pytest.mark.parametrize("message_id", ["0.0000000000000000aaaaaaaaaa", "not-an-id"])
async def test_dlq_retry_unknown_id(make_config: Any, store: Store,
                                    capsys: pytest.CaptureFixture[str], message_id: str) -> None:
    loaded: LoadedConfig = make_config()
    code, out, err = await cli(capsys, "dlq", "retry", message_id, "--config", str(loaded.path))
    assert code == 1
    assert f"no message {message_id}" in err
    assert out == ""


# -- read-only views without the serve-time secrets; limits --------------------------------------


async def test_read_only_views_work_without_serve_secrets(
    make_config: Any, store: Store, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator's shell often lacks the API tokens and webhook secrets: the views that only
    read Redis still work; check and serve still refuse to run without them."""
    loaded: LoadedConfig = make_config()
    config = str(loaded.path)
    async with running_hub(loaded) as client:
        resp = await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "ro-1", "sender": "buyer-ro", "text": "Hola, ¿dónde está mi pedido?"}))
        assert resp.status == 200
        async def routed() -> str | None:
            conv = await conversation_of(client, "buyer-ro")
            return str(conv["id"]) if conv["status"] == "queued" else None

        cid = await eventually(routed)
    for name in ("IH_TEST_SECRET", "IH_TEST_ADMIN", "IH_TEST_AGENT"):
        monkeypatch.delenv(name)
    code, out, err = await cli(capsys, "quarantine", "list", "--config", config)
    assert code == 0 and "quarantine is empty" in out, err
    code, out, err = await cli(capsys, "dlq", "list", "--json", "--config", config)
    assert code == 0 and json.loads(out) == [], err
    code, out, err = await cli(capsys, "routing", "explain", cid, "--config", config)
    assert code == 0 and "classified" in out, err
    code, out, err = await cli(capsys, "check", "--config", config)
    assert code == 2 and "IH_TEST_ADMIN is not set" in err


@pytest.mark.parametrize("command", [["quarantine", "list"], ["dlq", "list"]])
@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_limit_must_be_positive(tmp_path: Path, valid_text: str,
                                capsys: pytest.CaptureFixture[str], command: list[str],
                                limit: str) -> None:
    path = tmp_path / "good.toml"
    path.write_text(valid_text)
    with pytest.raises(SystemExit) as info:
        main([*command, "--limit", limit, "--config", str(path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "--limit" in err and "expected a positive integer" in err


def test_check_example_config_with_the_readme_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's first command's secrets pass the length rule, its old ones do not."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    assert "INBOXHUB_ADMIN_TOKEN=dev-admin-token-1234" in readme
    assert "INBOXHUB_DEMO_SECRET=dev-demo-secret-1234" in readme
    example = root / "config" / "example.toml"
    monkeypatch.setenv("INBOXHUB_ADMIN_TOKEN", "dev-admin-token-1234")
    monkeypatch.setenv("INBOXHUB_DEMO_SECRET", "dev-demo-secret-1234")
    code, out, err = run_check(capsys, example)
    assert code == 0, err
    assert "5 queues" in out and "4 rules" in out and "3 agents" in out
    monkeypatch.setenv("INBOXHUB_DEMO_SECRET", "dev-demo-secret")
    code, out, err = run_check(capsys, example)
    assert code == 2 and "channels[0].settings.secret" in err and "16 characters" in err
