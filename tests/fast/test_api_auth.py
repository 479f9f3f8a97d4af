"""API keys, admin keys, thread ownership, unstored turns, expiry and CORS (issue 9)."""
import asyncio

import httpx

from agent.config import AgentConfig
from api.app import create_app
from api.settings import Settings
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder, MockPolicy


def script(prompt, kind):
    return ("Fine.", 0.1, True)


async def _app(tmp_path, **settings):
    app = create_app(Settings(cache_dir=tmp_path, **settings), policy=MockPolicy(script),
                     retriever=Retriever(tmp_path / "idx", FakeEmbedder()), agent_config=AgentConfig(tau_think=1.0))
    return app


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def ask(content="hi", **kw):
    return {"messages": [{"role": "user", "content": content}], **kw}


async def test_keys_are_required_when_set(tmp_path):
    app = await _app(tmp_path, api_keys="k1, k2", admin_api_keys="root")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.post("/v1/chat/completions", json=ask())
            assert r.status_code == 401
            assert r.json()["error"] == {"message": r.json()["error"]["message"], "type": "invalid_request_error",
                                         "param": None, "code": "invalid_api_key"}
            assert (await c.post("/v1/chat/completions", json=ask(), headers=_h("nope"))).status_code == 401
            assert (await c.post("/v1/chat/completions", json=ask(), headers={"Authorization": "k1"})).status_code == 401
            assert (await c.post("/v1/chat/completions", json=ask(), headers=_h("k2"))).status_code == 200
            assert (await c.post("/v1/chat/completions", json=ask(), headers=_h("root"))).status_code == 200
            assert (await c.get("/v1/models")).status_code == 401
            assert (await c.get("/v1/search", params={"q": "x"})).status_code == 401
            assert (await c.get("/healthz")).status_code == 200  # open unless protect_health
            doc = {"source": "a.md", "text": "# A\n\nalpha"}
            r = await c.post("/v1/documents", json=doc, headers=_h("k1"))
            assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_required"
            assert (await c.post("/v1/documents", json=doc, headers=_h("root"))).status_code == 201
            r = await c.delete("/v1/documents", params={"source": "a.md"}, headers=_h("k1"))
            assert r.status_code == 403
            assert (await c.get("/v1/documents", headers=_h("k1"))).json()["data"][0]["source"] == "a.md"


async def test_protected_health_and_metrics(tmp_path):
    app = await _app(tmp_path, api_keys="k1", protect_health=True)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.get("/healthz")).status_code == 401
            assert (await c.get("/metrics")).status_code == 401
            assert (await c.get("/healthz", headers=_h("k1"))).status_code == 200


async def test_threads_belong_to_their_key_and_can_be_deleted(tmp_path):
    app = await _app(tmp_path, api_keys="alice,bob")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.post("/v1/chat/completions", json=ask(thread_id="t1"), headers=_h("alice"))
            assert r.json()["thinkgate"]["thread_id"] == "t1"
            r = await c.post("/v1/chat/completions", json=ask("more", thread_id="t1"), headers=_h("bob"))
            assert r.status_code == 404 and r.json()["error"]["code"] == "thread_not_found"
            assert (await c.delete("/v1/threads/t1", headers=_h("bob"))).status_code == 404
            r = await c.post("/v1/chat/completions", json=ask("more", thread_id="t1"), headers=_h("alice"))
            assert r.status_code == 200
            agent = app.state.chat.agent
            cfg = {"configurable": {"thread_id": "t1"}}
            assert len((await agent.graph.aget_state(cfg)).values["messages"]) == 4
            r = await c.delete("/v1/threads/t1", headers=_h("alice"))
            assert r.status_code == 200 and r.json() == {"id": "t1", "object": "thread.deleted", "deleted": True}
            assert not (await agent.graph.aget_state(cfg)).values  # checkpoints gone
            assert (await c.delete("/v1/threads/t1", headers=_h("alice"))).status_code == 404


async def test_turns_without_a_thread_are_not_stored_unless_asked(tmp_path):
    app = await _app(tmp_path)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.post("/v1/chat/completions", json=ask())
            assert r.json()["thinkgate"]["thread_id"] is None
            threads = app.state.chat.threads
            assert (await threads.run("SELECT count(*) FROM checkpoints", ()))[0][0] == 0
            r = await c.post("/v1/chat/completions", json=ask(store=True))
            tid = r.json()["thinkgate"]["thread_id"]
            assert tid and await threads.owner_of(tid) == "anonymous"
            r = await c.post("/v1/chat/completions", json=ask("and?", thread_id=tid))
            assert r.status_code == 200
            got = (await c.get(f"/v1/threads/{tid}")).json()
            assert got["object"] == "thread" and [m["role"] for m in got["messages"]] == ["user", "assistant"] * 2
            assert got["messages"][2]["content"] == "and?"
            assert (await c.get("/v1/threads/nope")).status_code == 404


async def test_threads_expire(tmp_path):
    app = await _app(tmp_path)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            await c.post("/v1/chat/completions", json=ask(thread_id="old"))
            threads = app.state.chat.threads
            assert await threads.expire(3600) == 0
            await asyncio.sleep(0.05)
            assert await threads.expire(0.01) == 1
            assert await threads.owner_of("old") is None
            state = await app.state.chat.agent.graph.aget_state({"configurable": {"thread_id": "old"}})
            assert not state.values


async def test_cors_preflight(tmp_path):
    app = await _app(tmp_path, cors_origins="https://app.example")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.options("/v1/chat/completions", headers={
                "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type"})
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
            r = await c.options("/v1/chat/completions", headers={
                "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
            assert "access-control-allow-origin" not in r.headers
