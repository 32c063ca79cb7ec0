"""Typed aiohttp application keys: what the app holds, in one place."""

from __future__ import annotations

import asyncio

from aiohttp import web
from redis.asyncio import Redis

from channels.supervisor import TaskHealth
from hub.auth import TokenIndex
from hub.channel_health import ChannelHealthService
from hub.channel_manager import ChannelManager
from hub.config import LoadedConfig
from hub.ingest import Ingestor
from hub.metrics import Metrics
from hub.survey_links import LinkSigner
from routing.engine import RoutingEngine
from storage.fetches import RedisFetchQueue
from storage.health import HealthCounters
from storage.kpis import KpiStore
from storage.limiter import RedisLimiter
from storage.store import Store
from storage.surveys import SurveyAnswersStore
from storage.tokens import RedisTokenStore

CONFIG = web.AppKey("config", LoadedConfig)
METRICS = web.AppKey("metrics", Metrics)
TOKENS = web.AppKey("tokens", TokenIndex)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", Store)
CHANNELS = web.AppKey("channels", ChannelManager)
INGESTOR = web.AppKey("ingestor", Ingestor)
STOP = web.AppKey("stop", asyncio.Event)
ROUTING = web.AppKey("routing", RoutingEngine)
HEALTH = web.AppKey("health", TaskHealth)
LIMITER = web.AppKey("limiter", RedisLimiter)
OAUTH = web.AppKey("oauth_tokens", RedisTokenStore)  # channels' OAuth tokens, not API tokens
FETCHES = web.AppKey("fetches", RedisFetchQueue)
HEALTH_COUNTERS = web.AppKey("health_counters", HealthCounters)
# What this process runs (hub/roles.py): "http", "workers" or "all".
ROLE = web.AppKey("role", str)
CHANNEL_HEALTH = web.AppKey("channel_health", ChannelHealthService)
KPIS = web.AppKey("kpis", KpiStore)
# Survey links (hub/survey_links.py): the signer is only there when csat.link_secret and a
# public URL are configured.
SURVEY_LINKS = web.AppKey("survey_links", LinkSigner)
SURVEY_ANSWERS = web.AppKey("survey_answers", SurveyAnswersStore)
