"""``inboxhub channels fetches``: the backlog and failed fetches of a running hub, their retry
(one, or every one of an instance), usage errors, and that it needs no serve-time secrets."""

from __future__ import annotations

import json

import pytest

from hub.config import LoadedConfig
from tests.channels.fetch_example.provider import FetchProviderFake
from tests.channels.fetch_example.test_conformance import buyer_message
from tests.helpers import eventually, running_hub
from tests.test_cli import cli
from tests.test_fetches import fetches, fetching_config, notify, provider, texts

__all__ = ["fetching_config", "provider"]  # fixtures shared with tests/test_fetches.py


async def test_cli_lists_the_backlog_and_failed_fetches_and_retries_them(
    fetching_config: LoadedConfig, provider: FetchProviderFake,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = str(fetching_config.path)
    code, out, err = await cli(capsys, "channels", "fetches", "--config", config)
    assert code == 0, err
    assert out.strip() == "no channel has queued a fetch"
    async with running_hub(fetching_config) as client:
        for n in (1, 2, 3):
            provider.fail_next_fetch("auth")
            await notify(client, provider, n)

        async def all_failed() -> bool:
            return len((await fetches(client, "?state=failed"))["fetches"]) == 3

        await eventually(all_failed)
        [first, *_] = reversed((await fetches(client, "?state=failed"))["fetches"])
        for name in ("IH_TEST_SECRET", "IH_TEST_ADMIN", "IH_TEST_AGENT"):
            monkeypatch.delenv(name)  # an operator's shell without the serve-time secrets

        code, out, err = await cli(capsys, "channels", "fetches", "--config", config)
        assert code == 0, err
        [line] = out.strip().splitlines()
        assert line.startswith("market  queued=0 retrying=0 failed=3 oldest=-"), line

        code, out, err = await cli(capsys, "channels", "fetches", "market", "--failed",
                                   "--config", config)
        assert code == 0, err
        head, *rows = out.strip().splitlines()
        assert head.startswith("market ") and len(rows) == 3
        assert rows[-1].strip().startswith(first["id"])
        assert "attempts=1" in rows[-1] and "resource=m-1" in rows[-1]
        assert "AuthError: HTTP 401" in rows[-1]

        code, out, err = await cli(capsys, "channels", "fetches", "market", "--failed",
                                   "--json", "--config", config)
        assert code == 0, err
        data = json.loads(out)
        assert data["backlog"] == [{"instance": "market", "queued": 0, "retrying": 0,
                                    "failed": 3, "oldest_age_seconds": None}]
        assert [e["state"] for e in data["failed"]] == ["failed"] * 3

        code, out, err = await cli(capsys, "channels", "fetches", "retry", first["id"],
                                   "--config", config)
        assert code == 0, err
        assert out.strip() == f"{first['id']} queued for fetching again"

        async def stored(count: int) -> bool:
            return len(await texts(client)) == count

        await eventually(lambda: stored(1))
        assert await texts(client) == [buyer_message(1).text]
        code, out, err = await cli(capsys, "channels", "fetches", "retry", first["id"],
                                   "--config", config)
        assert code == 1 and f"no fetch {first['id']}" in err  # fetched and gone

        code, out, err = await cli(capsys, "channels", "fetches", "retry", "--all", "market",
                                   "--config", config)
        assert code == 0, err
        assert out.strip() == "2 failed fetch(es) of market queued again"
        await eventually(lambda: stored(3))
        code, out, err = await cli(capsys, "channels", "fetches", "market", "--config", config)
        assert out.strip() == "market  queued=0 retrying=0 failed=0 oldest=-"


async def test_cli_retry_of_a_fetch_that_is_not_failed(
    fetching_config: LoadedConfig, provider: FetchProviderFake,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with running_hub(fetching_config) as client:
        provider.hold_fetches()
        await notify(client, provider, 1)
        [entry] = (await fetches(client))["fetches"]
        code, _out, err = await cli(capsys, "channels", "fetches", "retry", entry["id"],
                                    "--config", str(fetching_config.path))
        assert code == 1 and "is not failed" in err
        provider.release_fetches()
        await eventually(lambda: texts(client))


@pytest.mark.parametrize(("args", "message"), [
    (["retry"], "retry needs an ID, or --all INSTANCE"),
    (["retry", "--all", "a/b"], "is not a channel instance name"),
    (["retry", "x", "--all", "market"], "not both"),
    (["retry", "x", "--failed"], "retry takes no --failed"),
    (["a b"], "is not a channel instance name"),
    (["market", "extra"], "unexpected argument 'extra'"),
    (["--all", "market"], "--all goes with retry"),
])
async def test_cli_usage_errors(fetching_config: LoadedConfig,
                                capsys: pytest.CaptureFixture[str], args: list[str],
                                message: str) -> None:
    code, out, err = await cli(capsys, "channels", "fetches", *args,
                               "--config", str(fetching_config.path))
    assert code == 2, (out, err)
    assert message in err and out == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--failed", "--limit", "0"], "expected a positive integer"),
    (["--failed", "--limit", "-1"], "expected a positive integer"),
    (["--failed", "--limit", "many"], "expected a positive integer"),
    (["retry", "--all"], "expected one argument"),
])
async def test_cli_argument_errors(fetching_config: LoadedConfig,
                                   capsys: pytest.CaptureFixture[str], args: list[str],
                                   message: str) -> None:
    with pytest.raises(SystemExit) as info:
        await cli(capsys, "channels", "fetches", *args, "--config", str(fetching_config.path))
    assert info.value.code == 2
    assert message in capsys.readouterr().err


async def test_cli_unknown_id(fetching_config: LoadedConfig,
                              capsys: pytest.CaptureFixture[str]) -> None:
    for job_id in ("not-an-id", "0" * 24 + ".market"):
        code, out, err = await cli(capsys, "channels", "fetches", "retry", job_id,
                                   "--config", str(fetching_config.path))
        assert code == 1 and f"no fetch {job_id}" in err and out == ""
