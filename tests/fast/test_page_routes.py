"""The chat page's routes (issue 28): served without a key, with a restrictive CSP, only its own files,
out of the OpenAPI schema; the page's script never writes HTML. The page itself runs in a real browser
in tests/integration/test_page.py."""
import re

import httpx

from agent.config import AgentConfig
from api.app import create_app
from api.page import CSP, STATIC
from api.settings import Settings
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder, MockPolicy


async def _client(tmp_path):
    app = create_app(Settings(cache_dir=tmp_path, api_keys="k1"), policy=MockPolicy(lambda p, k: ("Fine.", 0.1, True)),
                     retriever=Retriever(tmp_path / "idx", FakeEmbedder()), agent_config=AgentConfig(tau_think=1.0))
    return app


async def test_page_and_its_files_are_served_without_a_key_with_csp(tmp_path):
    app = await _client(tmp_path)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert r.headers["content-security-policy"] == CSP and r.headers["x-content-type-options"] == "nosniff"
            assert '<script src="/static/app.js" defer></script>' in r.text
            for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css")):
                f = await c.get(f"/static/{name}")
                assert f.status_code == 200 and f.headers["content-type"].startswith(ctype)
                assert f.headers["content-security-policy"] == CSP
            for bad in ("index.htm", "..%2Fpage.py", "secret"):
                miss = await c.get(f"/static/{bad}")
                assert miss.status_code == 404 and miss.json()["error"]["message"]  # OpenAI's error shape
            assert (await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})).status_code == 401
            paths = (await c.get("/openapi.json")).json()["paths"]
            assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def test_csp_allows_nothing_inline_or_foreign():
    rules = dict(part.strip().split(" ", 1) for part in CSP.split(";"))
    assert rules["default-src"] == "'none'" and rules["script-src"] == "'self'" and rules["style-src"] == "'self'"
    assert rules["connect-src"] == "'self'" and rules["frame-ancestors"] == "'none'"
    assert "unsafe" not in CSP and "http" not in CSP


def test_the_page_script_never_writes_html():
    js = (STATIC / "app.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", js)
    html = (STATIC / "index.html").read_text()
    assert "<script>" not in html and " style=" not in html and "http" not in html.replace("http://www.w3.org", "")
