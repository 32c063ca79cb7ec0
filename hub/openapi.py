"""The published OpenAPI 3.1 document; schemas come from the msgspec Structs themselves so
the document cannot drift from what the API actually returns."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from hub.models import Conversation, DeadLetter, MessageView, QuarantineEntry


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json({"$ref": "#/components/schemas/Error"}, "Error")


@cache
def build_openapi() -> dict[str, Any]:
    from hub.api import ReplyRequest

    (_refs, components) = msgspec.json.schema_components(
        [Conversation, MessageView, QuarantineEntry, DeadLetter, ReplyRequest],
        ref_template="#/components/schemas/{name}",
    )
    components["Error"] = {"type": "object", "properties": {"error": {"type": "string"}},
                           "required": ["error"]}
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    cid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "inboxhub API", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json({})}}},
            "/readyz": {"get": {"summary": "Readiness (Redis reachable)",
                                "responses": {"200": _json({}), "503": _json({})}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text exposition"}}}},
            "/api/v1/conversations": {"get": {
                "summary": "Conversations, most recently active first",
                "security": secured,
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer",
                                                                "minimum": 1, "maximum": 200}},
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {"name": "channel", "in": "query", "schema": {"type": "string"}},
                    {"name": "before", "in": "query", "schema": {"type": "number"}},
                ],
                "responses": {"200": _json({"type": "object", "properties": {
                    "conversations": {"type": "array", "items": _ref("Conversation")}}}),
                    "400": _ERROR, "401": _ERROR},
            }},
            "/api/v1/conversations/{id}": {"get": {
                "summary": "A conversation with its messages in order",
                "security": secured, "parameters": [cid],
                "responses": {"200": _json({"type": "object", "properties": {
                    "conversation": _ref("Conversation"),
                    "messages": {"type": "array", "items": _ref("MessageView")}}}),
                    "401": _ERROR, "404": _ERROR},
            }},
            "/api/v1/conversations/{id}/replies": {"post": {
                "summary": "Reply through the conversation's channel",
                "security": secured, "parameters": [
                    cid, {"name": "Idempotency-Key", "in": "header",
                          "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("ReplyRequest")}}},
                "responses": {
                    "202": _json({"type": "object", "properties": {
                        "message": _ref("MessageView"), "duplicate": {"type": "boolean"}}},
                        "Queued for sending"),
                    "200": _json({"type": "object"}, "Same idempotency key: the first reply"),
                    "400": _ERROR, "401": _ERROR, "404": _ERROR, "409": _ERROR, "422": _ERROR},
            }},
            "/api/v1/quarantine": {"get": {
                "summary": "Inputs that could not be normalized (supervisor)",
                "security": secured,
                "responses": {"200": _json({"type": "object", "properties": {
                    "entries": {"type": "array", "items": _ref("QuarantineEntry")}}}),
                    "401": _ERROR, "403": _ERROR},
            }},
            "/api/v1/dlq": {"get": {
                "summary": "Replies that failed for good (supervisor)",
                "security": secured,
                "responses": {"200": _json({"type": "object", "properties": {
                    "entries": {"type": "array", "items": _ref("DeadLetter")}}}),
                    "401": _ERROR, "403": _ERROR},
            }},
            "/api/v1/dlq/{message_id}/retry": {"post": {
                "summary": "Send a failed reply again (supervisor)",
                "security": secured,
                "parameters": [{"name": "message_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"202": _json({}), "401": _ERROR, "403": _ERROR,
                              "404": _ERROR, "409": _ERROR},
            }},
            "/webhooks/{type}/{instance}": {"post": {
                "summary": "Inbound provider traffic for one channel instance",
                "parameters": [
                    {"name": "type", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "instance", "in": "path", "required": True,
                     "schema": {"type": "string"}}],
                "responses": {"200": _json({}), "400": _ERROR, "401": _ERROR, "404": _ERROR,
                              "413": _ERROR, "503": _ERROR},
            }},
        },
    }
