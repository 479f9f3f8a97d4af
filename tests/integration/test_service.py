"""Integration tier: the real SmolLM2-135M-Instruct and all-MiniLM-L6-v2 (prepared by `make
models`), a small real index of tests/data, the real app over HTTP (httpx ASGI transport)."""
import json
from pathlib import Path

import httpx
import pytest

from agent.config import AgentConfig
from api.app import create_app
from api.settings import Settings
from policy.models import TEST_POLICY, cache_dir

pytestmark = pytest.mark.integration
DATA = Path(__file__).parent.parent / "data"
EASY = "What is a list comprehension?"      # SmolLM2 drafts this at ~0.6 nats/token
HARD = "What is 37 times 49 minus 18?"      # ~2.3 nats/token: the gate sends it to think


@pytest.fixture(scope="module")
async def client(tmp_path_factory):
    from retrieval.retriever import Retriever

    tmp = tmp_path_factory.mktemp("svc")
    retriever = Retriever(tmp / "index")
    rep = retriever.ingest([DATA], progress=False)
    assert rep.files_indexed == 4 and rep.chunks_added >= 8
    settings = Settings(model=TEST_POLICY, cache_dir=cache_dir(), index_dir=tmp / "index",
                        threads_db=tmp / "threads.sqlite")
    # defaults pinned: a thinkgate.json written by a calibration run must not change what is tested
    app = create_app(settings, retriever=retriever, agent_config=AgentConfig())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                     timeout=300) as c:
            yield c


async def ask(client, content, **kw):
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": content}],
            "max_tokens": 24, **kw}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def test_confident_question_takes_fast_path(client):
    j = await ask(client, EASY)
    tg = j["thinkgate"]
    assert tg["decision"] == "answer", tg["reason"]
    assert tg["entropy"]["mean"] <= tg["thresholds"]["tau_think"]
    assert tg["steps"] == [] and j["choices"][0]["message"]["reasoning_content"] is None
    assert "list" in j["choices"][0]["message"]["content"].lower()
    assert tg["sources"] and tg["sources"][0]["source"].endswith("lists.md")
    assert j["usage"]["completion_tokens"] <= 24


async def test_hard_question_thinks(client):
    j = await ask(client, HARD)
    tg = j["thinkgate"]
    assert tg["decision"] == "think", tg["reason"]
    assert tg["entropy"]["mean"] > tg["thresholds"]["tau_think"]
    assert len(tg["steps"]) >= 1 and tg["exit_reason"] in ("certain", "budget", "model_closed", "model_ended")
    msg = j["choices"][0]["message"]
    assert msg["reasoning"] == msg["reasoning_content"] and msg["content"].strip()
    if tg["exit_reason"] == "model_ended" and len(tg["steps"]) == 1:
        # the model ended its turn in its first step: that step is the answer, no reasoning is left
        assert msg["reasoning_content"] is None and msg["content"] == tg["steps"][0]["text"]
    else:
        assert msg["reasoning_content"] and j["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


async def test_streaming_is_well_formed(client):
    body = {"messages": [{"role": "user", "content": EASY}], "max_tokens": 16, "stream": True,
            "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = [line async for line in r.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(line.startswith("data: ") for line in lines)
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    finals = [e for e in events if e["choices"] and e["choices"][0].get("finish_reason")]
    assert len(finals) == 1 and finals[0]["thinkgate"]["decision"] == "answer"
    assert events[-1]["usage"]["completion_tokens"] >= 1
    # greedy decoding: the stream says what the non-streaming call says
    j = await ask(client, EASY, max_tokens=16)
    assert content.strip() == j["choices"][0]["message"]["content"]


async def test_follow_up_in_thread_sees_earlier_turn(client):
    first = await ask(client, "What does len() return?", thread_id="it-thread", max_tokens=12)
    assert first["thinkgate"]["thread_id"] == "it-thread"
    await ask(client, "And for a dictionary?", thread_id="it-thread", max_tokens=12)
    agent = client._transport.app.state.chat.agent
    state = await agent.graph.aget_state({"configurable": {"thread_id": "it-thread"}})
    msgs = state.values["messages"]
    assert [m.type for m in msgs] == ["human", "ai", "human", "ai"]
    prompt = agent.context.policy.detokenize(state.values["transcript"])
    assert "What does len() return?" in prompt and first["choices"][0]["message"]["content"][:20] in prompt
    # the retrieval query of the follow-up includes the earlier question
    assert "len()" in state.values["retrievals"][0]["query"]


async def test_documents_roundtrip_and_search(client):
    r = await client.post("/v1/documents", json={"source": "notes/walrus.md", "format": "md",
                                                 "text": "# Walrus\n\nThe := operator assigns inside an expression."})
    assert r.status_code == 201
    hits = (await client.get("/v1/search", params={"q": "assignment expression operator", "k": 2})).json()["data"]
    assert hits[0]["source"] == "notes/walrus.md" and 0 < hits[0]["score"] <= 1
    assert (await client.delete(f"/v1/documents/{r.json()['id']}")).status_code == 200


async def test_self_consistency_votes_on_the_real_model(client):
    """reasoning_effort=high with max_samples 3 (issue 11): when thinking ends uncertain the agent
    samples more reasoning+answer completions and votes; the budget still holds."""
    j = await ask(client, HARD, reasoning_effort="high", max_samples=3, max_tokens=None, max_completion_tokens=400,
                  temperature=0.0)
    tg = j["thinkgate"]
    assert tg["decision"] == "think"
    assert j["usage"]["completion_tokens"] <= 400
    if tg["exit_reason"] == "certain":  # a certain probe ends thinking: nothing to vote on
        assert tg["votes"] is None
        return
    v = tg["votes"]
    assert 2 <= len(v["samples"]) <= 3 and v["stop"] in ("decisive", "max_samples", "budget")
    assert v["chosen"] in {s["key"] for s in v["samples"]}
    assert all(s["seed"] is not None for s in v["samples"][1:])
    assert j["choices"][0]["message"]["content"].strip()
