"""The web inbox's routes without a browser: the page, the redirect, the static files with
their security and caching headers, and nothing outside ``hub/web/static`` answered."""

from __future__ import annotations

from typing import Any

from hub.web.routes import FILES
from tests.helpers import running_hub


async def test_page_redirect_static_and_headers(make_config: Any) -> None:
    async with running_hub(make_config()) as client:
        r = await client.get("/", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/inbox"

        r = await client.get("/inbox")
        assert r.status == 200 and r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Cache-Control"] == "no-cache"
        page = await r.text()
        assert '<script type="module" src="/inbox/static/app.js"></script>' in page

        for name, content_type in (("app.js", "text/javascript"), ("style.css", "text/css"),
                                   ("i18n/zh.json", "application/json")):
            r = await client.get(f"/inbox/static/{name}")
            assert r.status == 200 and r.content_type == content_type, name
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert await r.read() == FILES[name].body
            etag = r.headers["ETag"]
            again = await client.get(f"/inbox/static/{name}", headers={"If-None-Match": etag})
            assert again.status == 304 and await again.read() == b""

        # The page is public (it holds no data); the API behind it is not.
        r = await client.get("/api/v1/conversations")
        assert r.status == 401


async def test_only_the_packaged_files_are_answered(make_config: Any) -> None:
    async with running_hub(make_config()) as client:
        for path in ("/inbox/static/nope.js", "/inbox/static/../routes.py",
                     "/inbox/static/%2e%2e/routes.py", "/inbox/static/i18n/../../routes.py",
                     "/inbox/static//etc/passwd"):
            r = await client.get(path)
            assert r.status == 404, path
            body = await r.json()
            assert body["error"]["code"], path
        assert "routes.py" not in "".join(FILES)
        assert {"index.html", "app.js", "api.js", "i18n.js", "style.css", "i18n/en.json",
                "i18n/zh.json"} <= FILES.keys()
