"""The hub on a real Redis Cluster (tests/redis_cluster.py: three primaries on local ports).

The modules' own tests run here a second time with the ``redis_server`` and ``redis`` fixtures
pointing at the cluster: the same assertions, on a store whose partitions live on different
nodes, so any command that names keys of two slots fails here (CROSSSLOT) and not in
production. Marked ``cluster``: ``pytest -m "not cluster"`` leaves them out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode

from hub.config import LoadedConfig, load_config
from storage.cluster import HubRedisCluster
from storage.store import Store
from tests import (
    test_crash_recovery,
    test_erasure,
    test_events,
    test_lifecycle,
    test_pipeline,
    test_routing_api,
    test_search_api,
    test_sla_filter_api,
    test_take,
)
from tests.conftest import need_service, write_config
from tests.redis_cluster import ClusterUnavailable, RedisClusterServer

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """One three-primary cluster for the test session (about 2 s to form)."""
    try:
        cluster = RedisClusterServer(masters=3)
    except ClusterUnavailable as exc:
        need_service(str(exc))
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_server(redis_cluster: RedisClusterServer) -> RedisClusterServer:
    """Overrides conftest's: ``redis_server.url`` is the cluster's ``redis+cluster://`` URL."""
    return redis_cluster


@pytest_asyncio.fixture
async def redis(redis_cluster: RedisClusterServer) -> AsyncIterator[Redis]:
    """Overrides conftest's: a cluster client on an emptied cluster (every primary flushed)."""
    client = HubRedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", p) for p in redis_cluster.ports],
        socket_timeout=10)
    await client.flushall()
    yield client  # type: ignore[misc]
    await client.aclose()


PARTITIONS = 4  # ih:{p0}..{p3}: slots on all three primaries (p0, p1 share one)
# Tests whose data must land in one partition as with write_config's 2 (a buyer's threads
# sharing one contact): p0 and p1 are on one node, their deletes still reach {r}, {pp}, {kpi}.
TWO_PARTITIONS = {"test_retention", "test_erasure_resumed"}


@pytest.fixture
def partitions(request: pytest.FixtureRequest) -> int:
    return 2 if request.node.name in TWO_PARTITIONS else PARTITIONS


@pytest.fixture
def make_config(tmp_path: Path, redis_server: RedisClusterServer, redis: Redis,
                hub_env: None, partitions: int) -> Callable[..., LoadedConfig]:
    """Overrides conftest's: the cluster's URL, and partitions spread over every node."""

    def build(**kwargs: Any) -> LoadedConfig:
        kwargs.setdefault("partitions", partitions)
        redis_url = kwargs.pop("redis_url", redis_server.url)
        return load_config(write_config(tmp_path, redis_url, **kwargs))

    return build


@pytest_asyncio.fixture
async def store(redis: Redis, partitions: int) -> Store:
    """Overrides conftest's: the same partitions as the hubs of make_config."""
    return Store(redis, partitions=partitions)


# -- the pipeline: webhook -> stored -> routed -> reply sent -------------------------------
test_round_trip = test_pipeline.test_message_to_reply_round_trip
test_redelivery = test_pipeline.test_concurrent_redelivery_stores_one_message
test_sequence = test_pipeline.test_messages_keep_sequence_order
test_dead_letter_retry = test_pipeline.test_operator_down_retries_then_dead_letters_then_retry_sends
# -- crash: a hub SIGKILLed before its ack, another one reclaims ---------------------------
test_router_crash = test_crash_recovery.test_router_killed_before_ack_is_reclaimed_and_finished
test_sender_crash = test_crash_recovery.test_sender_killed_before_ack_does_not_send_twice
# -- the live events stream ----------------------------------------------------------------
test_events_reach = test_events.test_every_kind_reaches_whoever_may_see_it
test_events_resume = test_events.test_resume_with_last_event_id_loses_and_repeats_nothing


# -- routing: assignment, taking a conversation -------------------------------------------
test_assignment = test_routing_api.test_assignment_visible_through_api
test_take_once = test_take.test_an_agent_takes_a_waiting_conversation_once
# -- lists and search merged across partitions (one script per partition, per-node pipeline)
test_sla_list = test_sla_filter_api.test_sla_list_by_role_scope_filters_and_paging
test_search = test_search_api.test_search_text_names_orders_and_scope
# -- deletes spanning slots: erasure, retention -------------------------------------------
test_erasure_resumed = test_erasure.test_an_interrupted_erasure_is_finished_by_the_next
test_retention = test_lifecycle.test_retention_deletes_old_resolved_conversations_only
