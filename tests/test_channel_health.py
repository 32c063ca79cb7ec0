"""Channel health on a real hub (Redis, the app, its loops): webhook answers counted by class,
last inbound, send errors, poll lag of a failing poller, the silence alert and the providers'
push-subscription rules (one WARNING when a condition starts, one INFO when it ends), the API
and the CLI. The health clock is moved instead of waiting minutes: the counters and the
evaluator both read it, as they read ``time.time`` in production."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from channels.services.health import Bucket, PushSubscriptionRule
from hub import keys as K
from hub.cli import main
from hub.config import ConfigError, LoadedConfig, load_config
from tests.channels.polling_example import plugin as poll_plugin
from tests.channels.polling_example.provider import ExampleProvider
from tests.channels.polling_example.test_conformance import TOKEN, buyer_message
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, TEST_SECRET
from tests.helpers import OperatorEndpoint, auth, eventually, running_hub, signed_post_args
from tests.plugins import push_rules

FAST = {"hub": {"health_flush_seconds": 0.05, "health_evaluate_seconds": 0.05,
                "max_body_bytes": 4096}}
LOGGER = "hub.channel_health"


class Clock:
    """``time.time`` moved by ``offset`` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def use_clock(client: TestClient, clock: Clock) -> None:
    app = client.server.app
    app[K.HEALTH_COUNTERS].clock = clock
    app[K.CHANNEL_HEALTH].clock = clock


async def health(client: TestClient, instance: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/channels/{instance}", headers=auth(ADMIN_TOKEN))
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def evaluations(client: TestClient, instance: str, count: int = 2) -> dict[str, Any]:
    """Wait until the evaluator ran ``count`` more times; the last record seen."""
    seen = (await health(client, instance))["alerts"]["evaluated_at"] or 0.0
    for _ in range(count):
        async def later(after: float = seen) -> dict[str, Any] | None:
            record = await health(client, instance)
            at = record["alerts"]["evaluated_at"]
            return record if at is not None and at > after else None

        record = await eventually(later)
        seen = record["alerts"]["evaluated_at"]
    return record


def lines(caplog: pytest.LogCaptureFixture, level: int, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == level and fragment in r.getMessage()]


async def metric(client: TestClient, prefix: str) -> float | None:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- the rules as data --------------------------------------------------------------------------


def test_shopee_preset_judges_the_success_rate_once_more_than_600_pushes() -> None:
    rule = PushSubscriptionRule.shopee()
    now = 1_800_000_000.0
    minute = int(now // 60)

    def verdict(ok: int, failed: int) -> str | None:
        return rule.judge([Bucket(minute - 5, ok, failed)], now).level

    assert verdict(100, 500) is None  # 600 pushes: not "more than 600"
    assert verdict(150, 501) == "cut"  # 23 %
    assert verdict(300, 400) == "warn"  # 43 %
    assert verdict(500, 200) is None  # 71 %
    # pushes older than 6 h do not count
    assert rule.judge([Bucket(minute - 6 * 60 - 1, 0, 5000)], now).level is None


def test_mercadolibre_preset_judges_a_streak_of_failed_or_slow_answers() -> None:
    rule = PushSubscriptionRule.mercadolibre()
    assert rule.ack_within_seconds == 0.5
    now = 1_800_000_000.0
    minute = int(now // 60)
    failing = [Bucket(minute - 70, 10, 0), Bucket(minute - 61, 0, 3), Bucket(minute - 2, 0, 9)]
    risk = rule.judge(failing, now)
    assert risk.level == "cut" and risk.failing_seconds is not None
    assert risk.failing_seconds >= 3600
    assert rule.judge([Bucket(minute - 11, 0, 4)], now).level == "warn"
    assert rule.judge([Bucket(minute - 5, 0, 4)], now).level is None
    # one push answered well ends the streak
    assert rule.judge([*failing, Bucket(minute - 1, 1, 0)], now).level is None


def test_a_rule_refuses_numbers_that_are_no_rate() -> None:
    with pytest.raises(ValueError, match="success rate"):
        PushSubscriptionRule(provider="x", warn_below=70)
    with pytest.raises(ValueError, match="window_seconds"):
        PushSubscriptionRule(provider="x", window_seconds=7 * 3600)


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "true", '"ten"'])
def test_alert_after_silence_minutes_is_a_positive_integer_in_check_and_serve(
    make_config: Any, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    loaded: LoadedConfig = make_config(extra=push_rules.channel_toml("quiet", "api"))
    path = loaded.path
    text = path.read_text().replace('name = "quiet"\ntype = "api"\n',
                                    f'name = "quiet"\ntype = "api"\n'
                                    f"alert_after_silence_minutes = {value}\n")
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)  # what serve runs at start-up
    assert "channels[1].alert_after_silence_minutes" in str(info.value)
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: channels[1].alert_after_silence_minutes: Expected `int" in err


def test_alert_after_silence_minutes_and_health_intervals_load(make_config: Any) -> None:
    loaded: LoadedConfig = make_config(
        overrides=FAST, extra=push_rules.channel_toml("quiet", "api",
                                                      alert_after_silence_minutes=30))
    [shop, quiet] = loaded.config.channels
    assert shop.alert_after_silence_minutes is None
    assert quiet.alert_after_silence_minutes == 30
    assert loaded.config.hub.health_flush_seconds == 0.05
    path = loaded.path
    path.write_text(path.read_text().replace("health_flush_seconds = 0.05",
                                             "health_flush_seconds = 0"))
    with pytest.raises(ConfigError, match=r"hub\.health_flush_seconds: expected > 0"):
        load_config(path)


# -- counts, inbound, API, CLI -----------------------------------------------------------------


async def test_webhook_answers_are_counted_by_class_and_shown_in_api_cli_and_metrics(
    make_config: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded: LoadedConfig = make_config(overrides=FAST)
    async with running_hub(loaded) as client:
        before = time.time()
        ok = await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "h-1", "sender": "buyer-h", "text": "hola"}))
        assert ok.status == 200
        after = time.time()
        body = json.dumps({"id": "h-2", "sender": "b", "text": "x"}).encode()
        unsigned = await client.post("/webhooks/api/shop", data=body,
                                     headers={"Content-Type": "application/json"})
        assert unsigned.status == 401
        big = await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "h-3", "sender": "b", "text": "x" * 5000}))
        assert big.status == 413
        malformed = await client.post("/webhooks/api/shop", **signed_post_args(b"{not json"))
        assert malformed.status == 400
        # A GET handshake and a wrong method are no pushes.
        assert (await client.put("/webhooks/api/shop")).status == 405

        async def counted() -> dict[str, Any] | None:
            record = await health(client, "shop")
            webhook = record["webhook"]
            return record if webhook["accepted"] + sum(webhook["rejected"].values()) == 4 \
                else None

        record = await eventually(counted)
        assert record["webhook"] == {
            "accepted": 1, "slow": 0, "pushes_6h": 4, "success_rate_6h": 0.25,
            "rejected": {"signature": 1, "too_large": 1, "malformed": 1, "unavailable": 0}}
        assert before <= record["last_inbound_at"] <= after + 0.01
        assert record["instance"] == "shop" and record["type"] == "api"
        assert record["enabled"] is True and record["labels"] == []
        assert record["poll"] is None  # a webhook channel
        assert record["token"] is None and record["fetch_backlog"] is None  # not wired yet
        assert record["last_send_error"] is None
        assert record["alerts"]["silent"] is False

        resp = await client.get("/api/v1/channels", headers=auth(ADMIN_TOKEN))
        assert resp.status == 200
        text = await resp.text()
        assert TEST_SECRET not in text and "env:IH_TEST_SECRET" not in text
        assert [c["instance"] for c in json.loads(text)["channels"]] == ["shop"]

        assert await metric(
            client, 'inboxhub_webhook_requests_total{instance="shop",outcome="signature"}') == 1
        assert await metric(
            client, 'inboxhub_webhook_requests_total{instance="shop",outcome="accepted"}') == 1
        last = await eventually(lambda: metric(
            client, 'inboxhub_channel_last_inbound_timestamp_seconds{instance="shop"}'))
        assert last == pytest.approx(record["last_inbound_at"], abs=0.01)
        assert await eventually(lambda: _at_least(
            client, 'inboxhub_channel_webhook_pushes_6h{instance="shop"}', 4)) == 4

        config = str(loaded.path)
        code, out, err = await cli(capsys, "channels", "status", "--config", config)
        assert code == 0, err
        header, row = out.strip().splitlines()
        assert header.split()[:3] == ["INSTANCE", "TYPE", "STATUS"]
        assert row.split()[:3] == ["shop", "api", "ok"]
        assert "1 ok / 3 rejected" in row and "25% of 4" in row

        code, out, err = await cli(capsys, "channels", "status", "shop", "--config", config)
        assert code == 0, err
        assert "1 accepted (0 slow); rejected: signature 1, too_large 1, malformed 1, " \
               "unavailable 0" in out
        assert "4 pushes, 25% answered well" in out

        code, out, err = await cli(capsys, "channels", "status", "shop", "--json",
                                   "--config", config)
        assert code == 0, err
        assert json.loads(out)["webhook"] == record["webhook"]

        code, out, err = await cli(capsys, "channels", "status", "nope", "--config", config)
        assert code == 1 and "no channel instance 'nope'" in err


async def test_the_channel_api_needs_an_admin_and_names_unknown_instances(
    make_config: Any,
) -> None:
    async with running_hub(make_config(overrides=FAST)) as client:
        assert (await client.get("/api/v1/channels")).status == 401
        assert (await client.get("/api/v1/channels", headers=auth(AGENT_TOKEN))).status == 403
        assert (await client.get("/api/v1/channels/shop",
                                 headers=auth(AGENT_TOKEN))).status == 403
        resp = await client.get("/api/v1/channels/nope", headers=auth(ADMIN_TOKEN))
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_the_cli_reads_without_serve_secrets(
    make_config: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Flushes a minute apart: what the API shows here comes from the flush at shutdown.
    loaded: LoadedConfig = make_config(overrides={"hub": {"health_flush_seconds": 60}})
    async with running_hub(loaded) as client:
        assert (await client.post("/webhooks/api/shop", **signed_post_args(
            {"id": "s-1", "sender": "b", "text": "hola"}))).status == 200
        assert (await health(client, "shop"))["webhook"]["accepted"] == 0  # not flushed yet
    monkeypatch.delenv("IH_TEST_SECRET")
    monkeypatch.delenv("IH_TEST_ADMIN")
    code, out, err = await cli(capsys, "channels", "status", "--json", "--config",
                               str(loaded.path))
    assert code == 0, err
    [shop] = json.loads(out)["channels"]
    assert shop["webhook"]["accepted"] == 1  # the final flush at shutdown kept it


# -- sends ----------------------------------------------------------------------------------------


async def test_the_last_send_error_is_kept_beside_the_last_success(make_config: Any) -> None:
    async with OperatorEndpoint() as operator:
        operator.fail_with = [(400, {})]  # permanent: dead-lettered at once
        loaded: LoadedConfig = make_config(outbound_url=operator.url, overrides=FAST)
        async with running_hub(loaded) as client:
            assert (await client.post("/webhooks/api/shop", **signed_post_args(
                {"id": "e-1", "sender": "buyer-e", "text": "hola"}))).status == 200

            async def conversation() -> str | None:
                resp = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
                convs = (await resp.json())["conversations"]
                return convs[0]["id"] if convs else None

            cid = await eventually(conversation)

            async def reply(text: str) -> None:
                resp = await client.post(f"/api/v1/conversations/{cid}/replies",
                                         json={"text": text}, headers=auth(ADMIN_TOKEN))
                assert resp.status == 202

            async def failed() -> dict[str, Any] | None:
                record = await health(client, "shop")
                return record if record["last_send_error"] is not None else None

            await reply("first")
            record = await eventually(failed)
            error = record["last_send_error"]
            assert error["error"] == "PermanentError: HTTP 400 Bad Request"
            assert record["last_sent_at"] is None
            await reply("second")

            async def sent() -> dict[str, Any] | None:
                record = await health(client, "shop")
                return record if record["last_sent_at"] is not None else None

            record = await eventually(sent)
            assert operator.received[0]["text"] == "second"
            # kept: the operator sees what failed last, and that sends work again since
            assert record["last_send_error"] == error
            assert record["last_sent_at"] > error["at"]


# -- polls ----------------------------------------------------------------------------------------


@pytest.fixture
async def provider() -> AsyncIterator[ExampleProvider]:
    async with ExampleProvider(TOKEN) as fake:
        yield fake


@pytest.fixture
def example_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(poll_plugin.install(tmp_path / "site")))
    monkeypatch.setenv(poll_plugin.TOKEN_ENV, TOKEN)


async def test_poll_lag_grows_while_the_poller_fails(
    make_config: Any, example_plugin: None, provider: ExampleProvider,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loaded: LoadedConfig = make_config(overrides=FAST,
                                       extra=poll_plugin.channel_toml("poller", provider.url))
    provider.publish(buyer_message(1))
    clock = Clock()
    async with running_hub(loaded) as client:
        use_clock(client, clock)

        async def polled() -> dict[str, Any] | None:
            record = await health(client, "poller")
            poll = record["poll"]
            return record if poll["last_advanced_at"] is not None else None

        record = await eventually(polled)
        assert record["webhook"] is None  # a polling channel
        assert record["last_inbound_at"] is not None  # the poll stored a message
        [account] = record["poll"]["accounts"]
        assert account["account"] == "default" and account["last_error"] is None

        provider.poll_failures = [(503, {})] * 10_000

        async def failing() -> dict[str, Any] | None:
            record = await health(client, "poller")
            return record if record["poll"]["last_error"] is not None else None

        record = await eventually(failing)
        assert record["poll"]["last_error"]["error"].startswith("RetryableError: HTTP 503")
        last_success = record["poll"]["last_success_at"]
        clock.offset = 600.0  # ten minutes without a good poll

        async def lagging() -> dict[str, Any] | None:
            record = await health(client, "poller")
            lag = record["poll"]["lag_seconds"]
            return record if lag is not None and lag >= 600 else None

        record = await eventually(lagging)
        assert record["poll"]["last_success_at"] == last_success  # failing polls do not count
        assert record["poll"]["accounts"][0]["lag_seconds"] == record["poll"]["lag_seconds"]
        gauge = await eventually(lambda: _at_least(
            client, 'inboxhub_channel_poll_lag_seconds{instance="poller"}', 600))
        assert gauge >= 600
        code, out, err = await cli(capsys, "channels", "status", "poller",
                                   "--config", str(loaded.path))
        assert code == 0, err
        assert "poll lag:" in out
        assert "default: lag " in out and "last error RetryableError: HTTP 503" in out


async def _at_least(client: TestClient, prefix: str, floor: float) -> float | None:
    value = await metric(client, prefix)
    return value if value is not None and value >= floor else None


# -- alerts ---------------------------------------------------------------------------------------


async def test_silence_alert_raised_after_the_configured_minutes_and_cleared_by_inbound(
    make_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    loaded: LoadedConfig = make_config(overrides=FAST, extra=push_rules.channel_toml(
        "quiet", "api", alert_after_silence_minutes=1))
    clock = Clock()
    async with running_hub(loaded) as client:
        use_clock(client, clock)
        record = await evaluations(client, "quiet")
        assert record["alerts"]["silent"] is False
        assert record["alerts"]["silent_since"] is None  # only while the alert holds
        assert await metric(client, 'inboxhub_channel_silent{instance="quiet"}') == 0

        clock.offset = 61.0  # a minute and a second since the hub first ran the channel
        record = await evaluations(client, "quiet", 3)
        assert record["alerts"]["silent"] is True
        assert record["alerts"]["silent_since"] is not None
        assert await metric(client, 'inboxhub_channel_silent{instance="quiet"}') == 1
        [warning] = lines(caplog, logging.WARNING, "channel quiet is silent")
        assert "no inbound for 1 min" in warning and "alert_after_silence_minutes = 1" in warning
        # the other channel has no threshold: never silent
        assert (await health(client, "shop"))["alerts"]["silent"] is False

        resp = await client.post("/webhooks/api/quiet", **signed_post_args(
            {"id": "q-1", "sender": "buyer-q", "text": "hola"}))
        assert resp.status == 200

        async def cleared() -> dict[str, Any] | None:
            record = await health(client, "quiet")
            return record if not record["alerts"]["silent"] else None

        assert (await eventually(cleared))["alerts"]["silent_since"] is None
        await evaluations(client, "quiet", 3)
        assert await metric(client, 'inboxhub_channel_silent{instance="quiet"}') == 0
        assert len(lines(caplog, logging.WARNING, "channel quiet is silent")) == 1
        assert len(lines(caplog, logging.INFO, "channel quiet is no longer silent")) == 1
        assert (await client.get("/readyz")).status == 200  # silence is an alert, not readiness


async def test_shopee_rule_raises_cut_risk_under_30_percent_of_600_pushes(
    make_config: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    push_rules.register(monkeypatch)
    caplog.set_level(logging.INFO, logger=LOGGER)
    loaded: LoadedConfig = make_config(overrides=FAST, extra=push_rules.channel_toml(
        "shopee", push_rules.SHOPEE))
    clock = Clock()
    async with running_hub(loaded) as client:
        use_clock(client, clock)
        gate = asyncio.Semaphore(16)

        async def push(i: int, signed: bool) -> int:
            payload = {"id": f"sp-{i}", "sender": f"buyer-{i % 7}", "text": "hola"}
            args = signed_post_args(payload)
            if not signed:
                del args["headers"]["X-Inboxhub-Signature"]
            async with gate:
                resp = await client.post(f"/webhooks/{push_rules.SHOPEE}/shopee", **args)
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(push(i, signed=i % 5 == 0) for i in range(650)))
        assert statuses.count(200) == 130 and statuses.count(401) == 520  # 20 % succeeded

        async def at_risk() -> dict[str, Any] | None:
            record = await health(client, "shopee")
            done = record["webhook"]["pushes_6h"] == 650  # all of them flushed
            return record if done and record["alerts"]["subscription_at_risk"] == "cut" else None

        record = await eventually(at_risk)
        assert record["push_subscription"] == "shopee"
        assert record["webhook"]["pushes_6h"] == 650
        assert record["webhook"]["success_rate_6h"] == pytest.approx(0.2)
        await evaluations(client, "shopee", 3)
        prefix = 'inboxhub_channel_subscription_at_risk{instance="shopee",level='
        assert await metric(client, prefix + '"cut"}') == 1
        assert await metric(client, prefix + '"warn"}') == 0
        [warning] = lines(caplog, logging.WARNING, "channel shopee: shopee push subscription")
        assert "at risk (cut: success rate under 30%)" in warning
        # figures as the evaluator read them (the flushes may still have been arriving)
        figures = re.search(r": (\d+) pushes in 360 min, (\d+)% answered well;", warning)
        assert figures is not None, warning
        assert 600 < int(figures[1]) <= 650 and int(figures[2]) < 30
        assert "never replayed" in warning
        code, out, _ = await cli(capsys, "channels", "status", "--config", str(loaded.path))
        assert code == 0
        assert [line.split()[2] for line in out.splitlines()[1:]] == ["ok", "cut"]

        clock.offset = 6 * 3600 + 120.0  # those pushes leave the 6 h window

        async def calm() -> dict[str, Any] | None:
            record = await health(client, "shopee")
            return record if record["alerts"]["subscription_at_risk"] is None else None

        await eventually(calm)
        await evaluations(client, "shopee", 2)
        assert await metric(client, prefix + '"cut"}') == 0
        assert len(lines(caplog, logging.WARNING, "shopee push subscription at risk")) == 1
        assert len(lines(caplog, logging.INFO, "shopee push subscription no longer at risk")) == 1


async def test_mercadolibre_rule_counts_slow_answers_and_warns_then_cuts(
    make_config: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    push_rules.register(monkeypatch)
    caplog.set_level(logging.INFO, logger=LOGGER)
    # Every answer is later than a 1 µs deadline: accepted by us, failed for the provider.
    loaded: LoadedConfig = make_config(overrides=FAST, extra=push_rules.channel_toml(
        "meli", push_rules.MELI, extra_settings="ack_within_seconds = 0.000001"))
    clock = Clock()
    async with running_hub(loaded) as client:
        use_clock(client, clock)
        for i in range(3):
            resp = await client.post(f"/webhooks/{push_rules.MELI}/meli", **signed_post_args(
                {"id": f"ml-{i}", "sender": "buyer-ml", "text": "hola"}))
            assert resp.status == 200

        async def slow() -> dict[str, Any] | None:
            record = await health(client, "meli")
            return record if record["webhook"]["slow"] == 3 else None

        record = await eventually(slow)
        assert record["webhook"]["accepted"] == 3
        assert record["webhook"]["success_rate_6h"] == 0.0
        assert record["push_subscription"] == "mercadolibre"
        assert await metric(client, 'inboxhub_webhook_slow_acks_total{instance="meli"}') == 3

        for offset, level in ((11 * 60.0, "warn"), (61 * 60.0, "cut")):
            clock.offset = offset

            async def reached(level: str = level) -> dict[str, Any] | None:
                record = await health(client, "meli")
                return record if record["alerts"]["subscription_at_risk"] == level else None

            await eventually(reached)
            await evaluations(client, "meli", 2)
        warnings = lines(caplog, logging.WARNING, "mercadolibre push subscription at risk")
        assert len(warnings) == 2
        assert "(warn: failing for 10 min or more)" in warnings[0]
        assert "(cut: failing for 60 min or more)" in warnings[1]
