"""Attachments end to end (contract v2 §8): content-addressed files under the data directory,
the channel's size and type limits judged on the bytes, downloads that are never rendered
inline and follow the conversation's scope, uploads for replies, and erasure and retention
that delete the files nothing else references.

Runs the real hub (Redis, the API channel, the sender) against files on disk; the sweep and
the file store are also driven directly where a crash is what they repair.
"""

from __future__ import annotations

import base64
import hashlib
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from channels.api import ApiChannel
from channels.attachments import AttachmentRefused, sniff
from channels.models import Attachment, InboundMessage
from channels.testing.attachments import EXECUTABLE, PNG
from hub import keys as K
from storage import keys, lifecycle
from storage.attachments import AttachmentService, FileBlobStore
from storage.store import Store
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN
from tests.helpers import OperatorEndpoint, auth, eventually, running_hub, signed_post_args

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(200))
LIMIT = 4096


def _files(data_dir: Path) -> dict[str, Path]:
    root = data_dir / "attachments"
    if not root.exists():
        return {}
    return {p.name: p for p in root.rglob("*")
            if p.is_file() and "tmp" not in p.relative_to(root).parts}


def _file(name: str, data: bytes, content_type: str = "image/png") -> dict[str, str]:
    return {"name": name, "content_type": content_type, "data": base64.b64encode(data).decode()}


async def _post(client: Any, mid: str, sender: str, *files: dict[str, str]) -> Any:
    return await client.post("/webhooks/api/shop", **signed_post_args(
        {"id": mid, "sender": sender, "text": "Foto del paquete", "attachments": list(files)}))


async def _message(client: Any, sender: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
        for conv in (await r.json())["conversations"]:
            if conv["contact_handle"] == sender:
                r = await client.get(f"/api/v1/conversations/{conv['id']}",
                                     headers=auth(ADMIN_TOKEN))
                detail = await r.json()
                return {"conversation": detail["conversation"],
                        "message": detail["messages"][0]}
        return None

    return await eventually(found)  # type: ignore[no-any-return]


@pytest.fixture
def config(make_config: Any) -> Any:
    return make_config(overrides={"channel": {"max_attachment_bytes": LIMIT}})


async def test_inbound_image_stored_and_downloaded(config: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with running_hub(config) as client:
        name = 'C:\\fotos\\caixa "quebrada"\n\u202eçãо.png'
        r = await _post(client, "m-1", "ana", _file(name, PNG, "image/jpeg"))
        assert r.status == 200, await r.text()
        found = await _message(client, "ana")
        [attachment] = found["message"]["attachments"]
        # Judged on the bytes (declared image/jpeg), named without a path or control chars.
        assert attachment["content_type"] == "image/png"
        assert attachment["name"] == "caixa quebrada\u00e7\u00e3\u043e.png"
        assert attachment["storage_ref"] == "sha256:" + hashlib.sha256(PNG).hexdigest()
        # The file: content-addressed, 0600 in 0700 directories, no temporary left behind.
        [(key, path)] = _files(data_dir).items()
        assert key == hashlib.sha256(PNG).hexdigest() and path.read_bytes() == PNG
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for parent in (path.parent, path.parent.parent, data_dir / "attachments"):
            assert stat.S_IMODE(parent.stat().st_mode) == 0o700
        assert not list((data_dir / "attachments" / "tmp").iterdir())

        url = f"/api/v1/messages/{found['message']['id']}/attachments/0"
        r = await client.get(url, headers=auth(ADMIN_TOKEN))
        assert r.status == 200 and await r.read() == PNG
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in r.headers["Content-Security-Policy"]
        disposition = r.headers["Content-Disposition"]
        assert disposition.startswith("attachment; ")
        assert 'filename="caixa quebrada___.png"' in disposition
        assert "filename*=UTF-8''caixa%20quebrada%C3%A7%C3%A3%D0%BE.png" in disposition
        assert "\n" not in disposition
        for bad in ("1", "9999", "-1", "x", "٣"):
            r = await client.get(url[:-1] + bad, headers=auth(ADMIN_TOKEN))
            assert r.status == 404

        # An agent who may not read the conversation gets the 404 of an unknown message.
        r = await client.get(url, headers=auth(AGENT_TOKEN))
        assert r.status == 404
        r = await client.get(url)
        assert r.status == 401


async def test_refusals_name_the_reason_and_keep_nothing(config: Any, tmp_path: Path) -> None:
    async with running_hub(config) as client:
        r = await _post(client, "m-big", "bob", _file("big.png", PNG + bytes(LIMIT)))
        assert r.status == 413
        error = (await r.json())["error"]
        assert error["code"] == "attachment_refused"
        assert f"over this channel's limit of {LIMIT} bytes" in error["message"]
        r = await _post(client, "m-exe", "bob", _file("factura.png", EXECUTABLE))
        assert r.status == 415
        message = (await r.json())["error"]["message"]
        assert "application/octet-stream" in message and "image/png" in message
        r = await _post(client, "m-many", "bob", *[_file(f"{i}.png", PNG) for i in range(11)])
        assert r.status == 413 and "at most 10" in (await r.json())["error"]["message"]
        # A good file next to a refused one is not kept either: the sender resends it.
        r = await _post(client, "m-mixed", "bob", _file("ok.jpg", JPEG),
                        _file("bad.png", EXECUTABLE))
        assert r.status == 415
        r = await client.get("/api/v1/conversations", headers=auth(ADMIN_TOKEN))
        assert (await r.json())["conversations"] == []
        r = await client.get("/api/v1/quarantine", headers=auth(ADMIN_TOKEN))
        assert (await r.json())["entries"] == []  # refused, not quarantined
    assert _files(tmp_path / "data") == {}


async def test_html_is_downloaded_as_plain_text(config: Any) -> None:
    async with running_hub(config) as client:
        page = b"<html><script>alert(document.cookie)</script></html>"
        r = await _post(client, "m-html", "eve", _file("index.html", page, "text/html"))
        assert r.status == 200, await r.text()
        found = await _message(client, "eve")
        r = await client.get(f"/api/v1/messages/{found['message']['id']}/attachments/0",
                             headers=auth(ADMIN_TOKEN))
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert r.headers["Content-Disposition"].startswith("attachment;")


async def test_upload_and_reply_with_a_file(make_config: Any, tmp_path: Path) -> None:
    async with OperatorEndpoint() as operator:
        loaded = make_config(outbound_url=operator.url,
                             overrides={"channel": {"max_attachment_bytes": LIMIT}})
        async with running_hub(loaded) as client:
            assert (await _post(client, "m-1", "ana")).status == 200
            cid = (await _message(client, "ana"))["conversation"]["id"]
            base = f"/api/v1/conversations/{cid}"
            h = auth(ADMIN_TOKEN)
            # The detail states the rules a reply's files are judged by (the reply box's).
            r = await client.get(base, headers=h)
            policy = (await r.json())["attachment_policy"]
            assert policy["max_bytes"] == LIMIT and policy["max_count"] == 10
            assert "image/jpeg" in policy["types"] or "image/*" in policy["types"]
            r = await client.post(f"{base}/attachments?name=etiqueta.jpg", data=JPEG,
                                  headers={**h, "Content-Type": "image/png"})
            assert r.status == 201, await r.text()
            uploaded = await r.json()
            assert uploaded["attachment"]["content_type"] == "image/jpeg"
            r = await client.post(f"{base}/attachments?name=big.png", data=PNG + bytes(LIMIT),
                                  headers=h)
            assert r.status == 413 and "limit" in (await r.json())["error"]["message"]
            r = await client.post(f"{base}/attachments?name=x.png", data=EXECUTABLE, headers=h)
            assert r.status == 415
            r = await client.post(f"{base}/replies", json={"attachments": ["0.nope"]},
                                  headers=h)
            assert r.status == 422 and (await r.json())["error"]["code"] == "unknown_upload"
            # Another principal cannot send someone else's upload.
            r = await client.post(f"{base}/replies", json={"attachments": [uploaded["id"]]},
                                  headers=auth(AGENT_TOKEN))
            assert r.status in (403, 422)
            r = await client.post(f"{base}/replies", json={
                "text": "Aquí la etiqueta", "attachments": [uploaded["id"]]}, headers=h)
            assert r.status == 202, await r.text()
            reply = (await r.json())["message"]
            assert [a["name"] for a in reply["attachments"]] == ["etiqueta.jpg"]

            async def delivered() -> list[dict[str, Any]]:
                return [m for m in operator.received if m.get("attachments")]

            [sent] = await eventually(delivered)
            [file] = sent["attachments"]
            assert base64.b64decode(file["data"]) == JPEG
            assert file["content_type"] == "image/jpeg" and file["name"] == "etiqueta.jpg"
            r = await client.get(f"/api/v1/messages/{reply['id']}/attachments/0", headers=h)
            assert r.status == 200 and await r.read() == JPEG


async def test_erasure_removes_the_files_only_one_buyer_had(config: Any, tmp_path: Path,
                                                           store: Store) -> None:
    data_dir = tmp_path / "data"
    shared = JPEG
    async with running_hub(config) as client:
        assert (await _post(client, "a-1", "ana", _file("mine.png", PNG),
                            _file("shared.jpg", shared))).status == 200
        assert (await _post(client, "b-1", "bob", _file("same.jpg", shared))).status == 200
        ana = await _message(client, "ana")
        bob = await _message(client, "bob")
        assert set(_files(data_dir)) == {hashlib.sha256(PNG).hexdigest(),
                                         hashlib.sha256(shared).hexdigest()}
        r = await client.delete(f"/api/v1/contacts/{ana['conversation']['contact_id']}",
                                headers=auth(ADMIN_TOKEN))
        assert r.status == 200, await r.text()
        assert (await r.json())["erased"]["files"] == 1
        # Ana's own photo is gone; the photo Bob also sent stays, and he still gets it.
        assert set(_files(data_dir)) == {hashlib.sha256(shared).hexdigest()}
        r = await client.get(f"/api/v1/messages/{bob['message']['id']}/attachments/0",
                             headers=auth(ADMIN_TOKEN))
        assert r.status == 200 and await r.read() == shared
        r = await client.get(f"/api/v1/messages/{ana['message']['id']}/attachments/0",
                             headers=auth(ADMIN_TOKEN))
        assert r.status == 404
        r = await client.delete(f"/api/v1/contacts/{bob['conversation']['contact_id']}",
                                headers=auth(ADMIN_TOKEN))
        assert (await r.json())["erased"]["files"] == 1
        assert _files(data_dir) == {}
        leftovers = [k async for k in store.redis.scan_iter(match="ih:*blob*")]
        assert leftovers == []


def _service(store: Store, root: Path, grace: float = 3600.0) -> AttachmentService:
    service = AttachmentService(store.redis, FileBlobStore(root), store.partition_keys(),
                                grace_seconds=grace)
    store.attachments = service
    return service


def _inbound(mid: str, thread: str, *files: Attachment) -> InboundMessage:
    return InboundMessage(channel_type="api", channel_instance="shop", provider_message_id=mid,
                          thread_id=thread, sender_handle=thread, text="foto",
                          attachments=files)


async def test_retention_removes_the_files_of_expired_conversations(store: Store,
                                                                    tmp_path: Path) -> None:
    service = _service(store, tmp_path / "files")
    photo = await service.put(PNG, name="p.png", content_type="image/png")
    kept = await service.put(JPEG, name="k.jpg", content_type="image/jpeg")
    old = await store.ingest(_inbound("m-old", "old", photo))
    await store.ingest(_inbound("m-new", "new", kept))
    await store.update_conversation(old.conversation_id, {"status": "resolved"})
    deleted = await lifecycle.purge_expired(store, time.time() + 100, retention_seconds=50)
    assert deleted == 1
    assert await service.get(photo.storage_ref or "") is None
    assert await service.get(kept.storage_ref or "") == JPEG


async def test_sweep_removes_only_unreferenced_files_past_the_grace(store: Store,
                                                                    tmp_path: Path) -> None:
    service = _service(store, tmp_path / "files", grace=60)
    referenced = await service.put(PNG, name="a.png", content_type="image/png")
    await store.ingest(_inbound("m-1", "t-1", referenced))
    orphan = await service.put(JPEG, name="b.jpg", content_type="image/jpeg")  # never ingested
    assert await service.sweep() == 0  # both younger than the grace
    past = time.time() + 120
    assert await service.sweep(now=past) == 0  # the orphan is still pinned (a store under way)
    await store.redis.delete(keys.blob_pin(hashlib.sha256(JPEG).hexdigest()))
    assert await service.sweep(now=past) == 1
    assert await service.get(orphan.storage_ref or "") is None
    assert await service.get(referenced.storage_ref or "") == PNG
    # A reference to a message that is gone (a deletion cut short by a crash) is pruned.
    [k] = [p for p in store.partition_keys()
           if await store.redis.exists(p.blob_refs(hashlib.sha256(PNG).hexdigest()))]
    mid = (await store.redis.smembers(k.blob_refs(hashlib.sha256(PNG).hexdigest()))).pop()
    await store.redis.delete(k.message(mid.decode()))
    assert await service.sweep(now=past) == 1
    assert await service.get(referenced.storage_ref or "") is None


async def test_a_store_racing_a_deletion_keeps_its_file(store: Store, tmp_path: Path) -> None:
    """A deletion that moved the file aside finds the new pin and puts the file back."""
    service = _service(store, tmp_path / "files")
    first = await service.put(PNG, name="a.png", content_type="image/png")
    sha = hashlib.sha256(PNG).hexdigest()
    await service.unpin([sha])

    async def a_new_store_arrives() -> bool:
        await service.put(PNG, name="again.png", content_type="image/png")
        return await service.referenced(sha)

    assert not await service.blobs.delete_unless(sha, a_new_store_arrives)
    assert await service.get(first.storage_ref or "") == PNG
    assert await service.release([sha]) == 0  # pinned by the new store


async def test_file_store_never_takes_a_path_from_outside(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "files")
    for key in ("../../etc/passwd", "a" * 63, "A" * 64, "/" + "a" * 63):
        with pytest.raises(ValueError):
            await blobs.write(key, b"x")
    service = AttachmentService(None, blobs, [])
    assert await service.get("sha256:../../../etc/passwd") is None
    assert await service.get("file:///etc/passwd") is None
    assert not list(tmp_path.rglob("passwd"))  # noqa: ASYNC240


@pytest.mark.parametrize(("data", "expected"), [
    (PNG, "image/png"), (JPEG, "image/jpeg"), (b"GIF89a" + bytes(10), "image/gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), (b"%PDF-1.7\n", "application/pdf"),
    (b"\x00\x00\x00\x18ftypheic", "image/heic"), (b"\x00\x00\x00\x18ftypisom", "video/mp4"),
    (b"\x00\x00\x00\x18ftypM4A ", "audio/mp4"), (b"OggS\x00\x02", "audio/ogg"),
    (b"ID3\x04\x00", "audio/mpeg"), (b"#!AMR\n", "audio/amr"), (b"PK\x03\x04", "application/zip"),
    ("Olá, segue o recibo\n".encode(), "text/plain"), (b"\xff\xfe\x00", "application/octet-stream"),
    (EXECUTABLE, "application/octet-stream"), (b"text\x00with nul", "application/octet-stream"),
])
def test_sniffing(data: bytes, expected: str) -> None:
    assert sniff(data) == expected


async def test_a_refused_placeholder_keeps_the_message_and_the_reason(
        config: Any, store: Store) -> None:
    """For a provider that must get a 2xx (Meta retries for days), an adapter keeps the
    message with ``refused_attachment``: the agent sees what was sent and why it is missing."""
    async with running_hub(config) as client:
        api = client.app[K.CHANNELS].get("shop")
        assert isinstance(api, ApiChannel)
        with pytest.raises(AttachmentRefused) as info:
            await api.store_attachment(PNG + bytes(LIMIT), name="huge.png")
        placeholder = api.refused_attachment("huge.png", "image/png", len(PNG) + LIMIT,
                                             info.value)
        await store.ingest(_inbound("m-ph", "zoe", placeholder))
        found = await _message(client, "zoe")
        [attachment] = found["message"]["attachments"]
        assert attachment["refused"].startswith("attachment 'huge.png' is")
        assert attachment["storage_ref"] is None
        r = await client.get(f"/api/v1/messages/{found['message']['id']}/attachments/0",
                             headers=auth(ADMIN_TOKEN))
        assert r.status == 404 and "not kept" in (await r.json())["error"]["message"]
