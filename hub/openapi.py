"""The published OpenAPI 3.1 document, generated from the app's route table.

Every handler states its contract with ``@operation`` (role, query parameters, body, responses
as Structs); routes whose handlers live elsewhere (health, webhooks) are described with
``document``. ``build_openapi(app)`` walks the router, so a route without a description is
visible (``undocumented(app)``, asserted empty by tests/test_openapi.py), and schemas come from
the same msgspec Structs the handlers encode and decode, so the document cannot drift from
what the API does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec
from aiohttp import web

from hub.errors import ErrorBody
from hub.query import Query

F = TypeVar("F", bound=Callable[..., Any])

TEXT = "text/plain"
BINARY = "*/*"  # a file download: the type is the file's own
EVENT_STREAM = "text/event-stream"  # Server-Sent Events (hub/events_api.py)
CSV = "text/csv"
SVG = "image/svg+xml"  # charts drawn on the server (hub/charts.py)
HTML = "text/html"  # pages the hub renders itself, errors included (hub/survey_page.py)
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class OrCsv:
    """A JSON answer that ``format=csv`` gives as a CSV table instead (the reports)."""

    body: Any
_STATUS_TEXT = {
    200: "OK", 202: "Accepted", 400: "Invalid request (the message names the problem)",
    401: "Missing or invalid bearer token", 403: "The principal may not do this",
    404: "Not found (or not visible to this principal)", 405: "Method not allowed",
    409: "Conflicts with the conversation's current state", 413: "Body too large",
    410: "Gone (expired or closed)", 415: "Unsupported media type",
    422: "Understood but cannot be done", 429: "Too many requests; retry later",
    503: "Unavailable; retry",
}


@dataclass(frozen=True)
class Operation:
    """One method on one path. ``responses`` maps a status to the Struct its body is
    (``None`` = the error body; ``TEXT`` = plain text)."""

    summary: str
    responses: Mapping[int, Any]
    role: str | None = "agent"
    description: str = ""
    tag: str = "conversations"
    query: Query | None = None
    body: Any = None
    headers: tuple[dict[str, Any], ...] = ()
    path_params: Mapping[str, str] = field(default_factory=dict)
    raw_body: str | None = None  # media type of a raw (file) request body
    form: Any = None  # a Struct sent as an HTML form (FORM) instead of JSON


_BY_HANDLER: dict[Any, Operation] = {}
_BY_ROUTE: dict[tuple[str, str], Operation] = {}


def operation(summary: str, responses: Mapping[int, Any], **kwargs: Any) -> Callable[[F], F]:
    """Describe the handler below; the route table decorator stays the outermost."""

    def register(handler: F) -> F:
        _BY_HANDLER[handler] = Operation(summary, responses, **kwargs)
        return handler

    return register


def document(method: str, path: str, op: Operation) -> None:
    """Describe a route whose handler is registered elsewhere (health, webhooks)."""
    _BY_ROUTE[(method.upper(), path)] = op


def _route_operations(app: web.Application) -> list[tuple[str, str, Operation | None]]:
    out: list[tuple[str, str, Operation | None]] = []
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        path = route.resource.canonical
        if route.method == "*":
            methods = sorted(m for (m, p) in _BY_ROUTE if p == path) or ["*"]
        else:
            methods = [route.method]
        for method in methods:
            op = _BY_HANDLER.get(route.handler) or _BY_ROUTE.get((method, path))
            out.append((method, path, op))
    return out


def undocumented(app: web.Application) -> list[str]:
    return [f"{m} {p}" for m, p, op in _route_operations(app) if op is None]


def _path_params(path: str, op: Operation) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [{"name": n, "in": "path", "required": True,
             "description": op.path_params.get(n, ""), "schema": {"type": "string",
                                                                  "minLength": 1}}
            for n in names]


def _ref(t: Any) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{t.__name__}"}


def _response(status: int, body: Any) -> dict[str, Any]:
    described: dict[str, Any] = {"description": _STATUS_TEXT.get(status, "Answer")}
    if body is TEXT or body in (EVENT_STREAM, SVG, HTML):
        described["content"] = {body: {"schema": {"type": "string"}}}
    elif body is BINARY:
        described["content"] = {BINARY: {"schema": {"type": "string", "format": "binary"}}}
    elif body is dict:
        described["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif isinstance(body, OrCsv):
        described["content"] = {"application/json": {"schema": _ref(body.body)},
                                CSV: {"schema": {"type": "string"}}}
    else:
        schema = _ref(ErrorBody) if body is None else _ref(body)
        described["content"] = {"application/json": {"schema": schema}}
    return described


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    responses: dict[int, Any] = dict(op.responses)
    if op.role is not None:
        responses.setdefault(401, None)
        if op.role != "agent":
            responses.setdefault(403, None)
    if op.query is not None:
        responses.setdefault(400, None)
    if op.body is not None or op.raw_body is not None or op.form is not None:
        responses.setdefault(400, None)
        responses.setdefault(413, None)
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_')}"
                       .replace("{", "").replace("}", "").replace(".", "_"),
        "tags": [op.tag],
        "parameters": [*_path_params(path, op), *(op.query.openapi() if op.query else []),
                       *op.headers],
        "responses": {str(s): _response(s, b) for s, b in sorted(responses.items())},
    }
    if op.description:
        out["description"] = op.description
    if op.role is not None:
        # a bearer token, or the sign-in cookie (with X-CSRF-Token on changes)
        out["security"] = [{"bearer": []}, {"session": []}]
        out["x-minimum-role"] = op.role
    else:
        out["security"] = []
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(op.body)}}}
    elif op.raw_body is not None:
        out["requestBody"] = {"required": True, "content": {
            op.raw_body: {"schema": {"type": "string", "format": "binary"}}}}
    elif op.form is not None:
        out["requestBody"] = {"required": True, "content": {FORM: {"schema": _ref(op.form)}}}
    return out


def _plain_tuples(node: Any) -> Any:
    """A fixed-size tuple of one type (``[conversation, agent]``) as an array of that type
    with its length: the same constraint, in the form every OpenAPI tool reads (some
    mishandle ``prefixItems`` with ``items: false``)."""
    if isinstance(node, list):
        return [_plain_tuples(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _plain_tuples(v) for k, v in node.items()}
    prefix = out.get("prefixItems")
    if isinstance(prefix, list) and prefix and all(p == prefix[0] for p in prefix) \
            and out.get("items") is False:
        del out["prefixItems"]
        out["items"] = prefix[0]
    return out


_cache: dict[tuple[tuple[str, str, int], ...], dict[str, Any]] = {}


def build_openapi(app: web.Application) -> dict[str, Any]:
    found = _route_operations(app)
    signature = tuple((m, p, id(op)) for m, p, op in found)
    cached = _cache.get(signature)
    if cached is not None:
        return cached
    paths: dict[str, dict[str, Any]] = {}
    types: set[Any] = {ErrorBody}
    for method, path, op in found:
        if op is None:
            continue
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
        types.update(t.body if isinstance(t, OrCsv) else t for t in op.responses.values()
                     if t not in (None, TEXT, BINARY, EVENT_STREAM, SVG, HTML, dict))
        if op.body is not None:
            types.add(op.body)
        if op.form is not None:
            types.add(op.form)
    _refs, components = msgspec.json.schema_components(
        sorted(types, key=lambda t: t.__name__), ref_template="#/components/schemas/{name}")
    document_ = {
        "openapi": "3.1.0",
        "info": {"title": "inboxhub API", "version": "1",
                 "description": "Agent, supervisor and operator API of the inboxhub hub. "
                                "Every error body is {\"error\": {\"code\", \"message\"}}."},
        "components": {
            "schemas": _plain_tuples(components),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "inboxhub_session",
                            "description": "POST /api/v1/auth/login sets it; every POST, PUT "
                                           "and DELETE also sends its csrf_token as "
                                           "X-CSRF-Token"},
            },
        },
        "paths": dict(sorted(paths.items())),
    }
    _cache[signature] = document_
    return document_


class Health(msgspec.Struct, frozen=True):
    status: str


class Readiness(msgspec.Struct, frozen=True):
    """``problems`` names what is wrong when not ready: ``redis`` (the error reaching it) and
    every background loop that is backing off or crashed (its status and last error).
    ``role``, ``pid`` and ``loops`` say what this process runs (``serve --role``): a
    ``--role http`` process is ready with no router among its loops."""

    status: str
    redis: str | None = None
    problems: dict[str, str] | None = None
    role: Literal["http", "workers", "all"] | None = None
    pid: int | None = None
    loops: list[str] | None = None


def _document_outside_routes() -> None:
    """Routes whose handlers live outside the API modules (health, webhooks)."""
    from hub.views import WebhookAccepted

    document("GET", "/healthz", Operation("Liveness", {200: Health}, role=None, tag="meta"))
    document("GET", "/readyz", Operation(
        "Readiness: Redis reachable and every background loop running",
        {200: Readiness, 503: Readiness}, role=None, tag="meta"))
    document("GET", "/metrics", Operation("Prometheus metrics (text exposition)", {200: TEXT},
                                          role=None, tag="meta"))
    instance = {"type": "channel type (api, ...)", "instance": "channel instance name"}
    document("POST", "/webhooks/{type}/{instance}", Operation(
        "Inbound provider traffic for one channel instance",
        {200: WebhookAccepted, 400: None, 401: None, 404: None, 405: None, 413: None,
         503: None},
        role=None, tag="webhooks", path_params=instance,
        description="Verified over the raw body before anything is parsed; acknowledged only "
                    "once stored. 400 malformed (kept in quarantine), 401 bad signature, "
                    "413 over hub.max_body_bytes, 503 not stored (retry)."))
    document("GET", "/webhooks/{type}/{instance}", Operation(
        "Provider verification handshake (channels that have one)",
        {200: TEXT, 404: None, 405: None}, role=None, tag="webhooks", path_params=instance))


    sub = {**instance, "path": "a second webhook URL of the instance (e.g. Twilio's "
                               "status callback), as the channel documents"}
    document("POST", "/webhooks/{type}/{instance}/{path}", Operation(
        "Inbound provider traffic on a channel's second URL (delivery status callbacks)",
        {200: WebhookAccepted, 400: None, 401: None, 404: None, 405: None, 413: None,
         503: None},
        role=None, tag="webhooks", path_params=sub,
        description="Like the main webhook; 404 for a path the channel does not serve."))
    document("GET", "/webhooks/{type}/{instance}/{path}", Operation(
        "Provider verification handshake on a channel's second URL",
        {200: TEXT, 404: None, 405: None}, role=None, tag="webhooks", path_params=sub))
_document_outside_routes()
