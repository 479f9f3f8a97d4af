"""Overload, deadlines and internal errors (issue 9): a bounded queue answers 429 with
Retry-After, every admitted request is answered, a deadline ends a request with 504 (an error
event on a stream), and a bug is a 500 with a logged id, never a 400."""
import asyncio
import json
import logging
import statistics
import time

import httpx
import pytest

from agent.config import AgentConfig
from api.admission import Admission
from api.app import create_app
from api.settings import Settings
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder, MockPolicy


def script(prompt, kind):
    return ("Short answer.", 0.1, True)  # under draft_tokens: the draft is the whole answer


async def _client(tmp_path, policy, **settings):
    app = create_app(Settings(cache_dir=tmp_path, **settings), policy=policy,
                     retriever=Retriever(tmp_path / "idx", FakeEmbedder()), agent_config=AgentConfig(tau_think=1.0))
    return app


async def test_burst_beyond_the_queue_gets_429_and_every_admitted_request_is_answered(tmp_path):
    policy = MockPolicy(script, token_delay_s=0.03)  # ~0.4 s a turn
    app = await _client(tmp_path, policy, max_running_requests=2, max_queued_requests=3)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
            async def one(i):
                t0 = time.perf_counter()
                r = await c.post("/v1/chat/completions", json={**body, "stream": i % 2 == 1})
                text = r.text if r.status_code != 200 else (await r.aread()).decode()
                return r, text, time.perf_counter() - t0
            results = await asyncio.gather(*(one(i) for i in range(16)))
    ok = [(r, t, s) for r, t, s in results if r.status_code == 200]
    refused = [(r, t) for r, t, _ in results if r.status_code == 429]
    assert len(ok) == 5 and len(refused) == 11  # 2 running + 3 queued admitted, the rest refused at once
    for r, text in refused:
        j = json.loads(text)
        assert j["error"]["type"] == "rate_limit_error" and j["error"]["code"] == "server_overloaded"
        assert int(r.headers["Retry-After"]) >= 1
    for r, text, _ in ok:  # every admitted one answered in full (plain or streamed)
        if text.startswith("data: "):
            events = [json.loads(x[6:]) for x in text.splitlines() if x.startswith("data: {")]
            answer = "".join(ch["delta"].get("content") or "" for e in events for ch in e["choices"])
        else:
            answer = json.loads(text)["choices"][0]["message"]["content"]
        assert answer == "Short answer."
    lat = sorted(s for _, _, s in ok)
    print(f"burst 16: admitted {len(ok)}, refused {len(refused)}, admitted latency p50 "
          f"{statistics.median(lat):.2f} s, max {lat[-1]:.2f} s")
    assert app.state.chat.admission.admitted == 0  # every place was given back


async def test_admission_bounds_and_idempotent_release():
    adm = Admission(1, 1)
    a, b = adm.admit(), adm.admit()
    assert a and b and adm.admit() is None and adm.refused == 1
    async with a:
        pass
    a.release()  # twice: no double free
    assert adm.admitted == 1 and adm.admit() is not None
    with pytest.raises(ValueError, match="max_running must be >= 1, got 0"):
        Admission(0, 1)


async def test_deadline_gives_504_and_a_stream_error_event(tmp_path):
    policy = MockPolicy(lambda p, k: ("x" * 200, 0.1, True), token_delay_s=0.01)  # 2 s a turn
    app = await _client(tmp_path, policy, request_timeout_s=0.3)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.post("/v1/chat/completions", json=body)
            assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
            made = policy.generated_tokens
            await asyncio.sleep(0.2)
            assert policy.generated_tokens == made  # generation stopped with the request
            r = await c.post("/v1/chat/completions", json={**body, "stream": True})
            lines = [x for x in r.text.splitlines() if x]
    assert lines[-1] == "data: [DONE]"
    err = json.loads(lines[-2].removeprefix("data: "))
    assert err["error"]["code"] == "deadline_exceeded"


async def test_a_bug_is_a_500_with_a_logged_id_not_a_400(tmp_path, caplog):
    def broken(prompt, kind):
        raise ValueError("an internal bug, not the client's fault")

    app = await _client(tmp_path, MockPolicy(broken))
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            with caplog.at_level(logging.ERROR, logger="thinkgate.api"):
                r = await c.post("/v1/chat/completions", json=body)
                s = await c.post("/v1/chat/completions", json={**body, "stream": True})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["type"] == "server_error" and err["code"] == "internal_error"
    eid = err["message"].split()[2]
    assert any(eid in rec.getMessage() for rec in caplog.records)
    assert "internal bug" not in err["message"]  # internals stay in the log
    event = json.loads([x for x in s.text.splitlines() if x][-2].removeprefix("data: "))
    assert event["error"]["code"] == "internal_error"
