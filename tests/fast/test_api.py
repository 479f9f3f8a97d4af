import json

import httpx
import pytest

from agent.config import AgentConfig
from api.app import create_app
from api.settings import Settings
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder, MockPolicy


def script(prompt, kind):
    if kind == "draft":
        if "hard" in prompt.rsplit("Question:", 1)[-1]:
            return ("Hmm", 3.0, False)
        return ("The answer [1].", 0.2, True)
    if kind == "step":
        return ("Let me think.\n\n", 0.5, False)
    return ("Done.", 0.1, True)


@pytest.fixture
async def client(tmp_path):
    r = Retriever(tmp_path / "idx", FakeEmbedder())
    r.add_text("doc.md", "# Lists\n\nA list comprehension builds a list.", "md")
    settings = Settings(cache_dir=tmp_path, max_input_chars=2000)
    app = create_app(settings, policy=MockPolicy(script), retriever=r,
                     agent_config=AgentConfig(tau_think=1.0, tau_exit=0.5))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            yield c


def chat(**kw):
    return {"model": "mock", "messages": [{"role": "user", "content": "what is a list comprehension"}], **kw}


async def test_chat_completion_shape(client):
    r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200
    j = r.json()
    assert j["object"] == "chat.completion" and j["model"] == "mock"
    msg = j["choices"][0]["message"]
    assert msg["role"] == "assistant" and msg["content"] == "The answer [1]."
    assert msg["reasoning_content"] is None and j["choices"][0]["finish_reason"] == "stop"
    tg = j["thinkgate"]
    assert tg["decision"] == "answer" and tg["thresholds"]["tau_think"] == 1.0
    assert tg["sources"][0]["source"] == "doc.md" and tg["sources"][0]["cited"] is True
    assert j["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert j["usage"]["total_tokens"] == j["usage"]["prompt_tokens"] + j["usage"]["completion_tokens"]


async def test_thinking_completion_reports_reasoning(client):
    r = await client.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "a hard one"}]))
    j = r.json()
    msg = j["choices"][0]["message"]
    assert j["thinkgate"]["decision"] == "think"
    assert msg["reasoning_content"] == msg["reasoning"] == "Let me think."
    assert msg["content"] == "Done."
    # reasoning_tokens: the step plus the discarded draft "Hmm" (hidden work), inside completion_tokens
    assert j["usage"]["completion_tokens_details"]["reasoning_tokens"] == len("Let me think.\n\n") + len("Hmm")
    assert j["usage"]["completion_tokens"] == len("Let me think.\n\n") + len("Hmm") + len("Done.") + 1  # + EOS


async def test_streaming_chunks_and_done(client):
    body = chat(messages=[{"role": "user", "content": "a hard one"}], stream=True,
                stream_options={"include_usage": True})
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in r.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert len({e["id"] for e in events}) == 1
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content", "") for e in events if e["choices"])
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert reasoning.strip() == "Let me think." and content == "Done."
    finals = [e for e in events if e["choices"] and e["choices"][0].get("finish_reason")]
    assert len(finals) == 1 and finals[0]["thinkgate"]["decision"] == "think"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


@pytest.mark.parametrize("body,status,param", [
    ({}, 400, "messages"),
    ({"messages": []}, 400, "messages"),
    ({"messages": "hi"}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "   "}]}, 400, "messages.0"),
    ({"messages": [{"role": "user"}]}, 400, "messages.0.content"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, 400, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, None),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "extreme"}, 400, "reasoning_effort"),
    ({"messages": [{"role": "user", "content": "x"}], "thread_id": "bad id!"}, 400, "thread_id"),
    ({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
    ({"messages": [{"role": "user", "content": "x" * 3000}]}, 400, "messages.0.content"),
])
async def test_bad_requests_get_openai_errors(client, body, status, param):
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"].startswith(param)


async def test_invalid_json_and_unknown_route(client):
    r = await client.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_invalid"
    r = await client.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


async def test_models_health_metrics(client):
    assert (await client.get("/v1/models")).json()["data"][0]["id"] == "mock"
    h = (await client.get("/healthz")).json()
    assert h["status"] == "ok" and h["chunks"] == 1
    assert h["store"]["store"] == "sqlite" and h["store"]["generation"] == h["store"]["cache_generation"] > 0
    assert h["store"]["faiss_kind"] == "flat-fp16"  # "auto" under 50,000 chunks
    await client.post("/v1/chat/completions", json=chat())
    m = (await client.get("/metrics")).text
    assert 'thinkgate_turns_total{decision="answer",effort="auto"}' in m


async def test_documents_and_search(client):
    r = await client.post("/v1/documents", json={"source": "notes/gen.md", "text": "# Gen\n\nyield makes generators",
                                                 "format": "md"})
    doc_id = r.json()["id"]
    assert r.status_code == 201 and r.json() == {"id": doc_id, "source": "notes/gen.md", "chunks": 1,
                                                 "object": "document"}
    r = await client.get("/v1/search", params={"q": "yield generators", "k": 1})
    assert r.status_code == 200 and r.json()["data"][0]["source"] == "notes/gen.md"
    assert {d["source"] for d in (await client.get("/v1/documents")).json()["data"]} == {"doc.md", "notes/gen.md"}
    assert doc_id in {d["id"] for d in (await client.get("/v1/documents")).json()["data"]}
    r = await client.delete(f"/v1/documents/{doc_id}")
    assert r.status_code == 200 and r.json()["chunks"] == 1
    assert (await client.delete(f"/v1/documents/{doc_id}")).status_code == 404
    assert (await client.delete("/v1/documents/notes/gen.md")).status_code == 404  # names are not ids
    for bad in ({"source": "x"}, {"source": " ", "text": "t"}, {"source": "x", "text": "t", "format": "pdf"}):
        r = await client.post("/v1/documents", json=bad)
        assert r.status_code == 400 and "error" in r.json()
    assert (await client.get("/v1/search", params={"q": "x", "k": 0})).status_code == 400
    assert (await client.get("/v1/search")).status_code == 400
    # nothing stored was lost by the bad requests
    assert [d["source"] for d in (await client.get("/v1/documents")).json()["data"]] == ["doc.md"]


async def test_thread_follow_up(client):
    r1 = (await client.post("/v1/chat/completions", json=chat(thread_id="conv-1"))).json()
    assert r1["thinkgate"]["thread_id"] == "conv-1"
    r2 = await client.post("/v1/chat/completions",
                           json=chat(thread_id="conv-1", messages=[{"role": "user", "content": "and more?"}]))
    assert r2.status_code == 200
    app_policy = client._transport.app.state.policy
    last_prompt = app_policy.calls[-1][1]
    assert "what is a list comprehension" in last_prompt and "The answer [1]." in last_prompt


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "hi \ud800 there"}],
    [{"role": "system", "content": "be \udfff brief"}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": [{"type": "text", "text": "part \ud800"}]}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b \ud801"}, {"role": "user", "content": "c"}],
])
async def test_lone_surrogates_are_a_400_not_a_500(client, messages):
    """The four repros of issue 9: invalid Unicode anywhere in a message is the client's error."""
    body = json.dumps({"model": "mock", "messages": messages}, ensure_ascii=True)  # JSON \\ud800 escapes
    r = await client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert "invalid Unicode" in err["message"] and err["type"] == "invalid_request_error"
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200  # still serving


async def test_top_p_and_temperature_reach_reasoning_and_answer_tokens(tmp_path):
    """top_p was validated and then dropped (issue 9): now the reasoning steps and the answer sample
    with the client's temperature/top_p; the gate's draft stays greedy (its entropy is the signal)."""
    r = Retriever(tmp_path / "idx", FakeEmbedder())
    r.add_text("doc.md", "# Lists\n\nA list comprehension builds a list.", "md")
    policy = MockPolicy(script)
    app = create_app(Settings(cache_dir=tmp_path), policy=policy, retriever=r,
                     agent_config=AgentConfig(tau_think=1.0, tau_exit=0.5))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            body = chat(messages=[{"role": "user", "content": "a hard one"}], temperature=0.7, top_p=0.9, seed=3)
            assert (await c.post("/v1/chat/completions", json=body)).status_code == 200
            easy = chat(temperature=0.7, top_p=0.9)  # its draft does not end: the answer continues it
            policy.script = lambda p, k: ("The answer", 0.2, False) if k == "draft" else ("Done.", 0.1, True)
            assert (await c.post("/v1/chat/completions", json=easy)).status_code == 200
    first = {}
    for kind, _, p in policy.calls:
        first.setdefault(kind, p)
    assert first["draft"].temperature == 0.0 and first["draft"].top_p == 1.0  # the gate's draft: greedy
    assert first["step"].temperature == 0.7 and first["step"].top_p == 0.9 and first["step"].seed == 3
    answer = [p for kind, _, p in policy.calls if kind == "draft" and p.temperature > 0]
    assert answer and all(p.top_p == 0.9 for p in answer)


async def test_delete_matches_exactly_and_names_are_plain(client):
    """Regression: POST "a", POST "a\n", DELETE "a%0A" deleted "a" (issue 9)."""
    r = await client.post("/v1/documents", json={"source": "a", "text": "alpha"})
    assert r.status_code == 201
    for bad in ("a\n", "a\x00b", "a\x1b[31m", "evil\u202etxt.md", "x\u2028y"):
        r = await client.post("/v1/documents", json={"source": bad, "text": "t"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "source", bad
    for path in ("/v1/documents/a%0A", "/v1/documents/a", "/v1/documents/doc_%0A"):
        assert (await client.delete(path)).status_code in (400, 404), path
    r = await client.delete("/v1/documents", params={"source": "a\n"})
    assert r.status_code == 404
    assert "a" in {d["source"] for d in (await client.get("/v1/documents")).json()["data"]}  # still there
    r = await client.delete("/v1/documents", params={"source": "a"})
    assert r.status_code == 200 and r.json()["source"] == "a"


def test_api_package_does_not_import_training_or_evaluation():
    """The server is one command of `cli`; `api/` serves and nothing else (issue 9)."""
    import ast
    from pathlib import Path

    for f in Path(__file__).parents[2].joinpath("api").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert not n.startswith(("training", "evals", "cli")), f"{f.name} imports {n}"


def test_agent_package_holds_only_the_graph():
    """Evaluation lives in `evals/` (issue 27): nothing in `agent/` imports it or training."""
    import ast
    from pathlib import Path

    for f in Path(__file__).parents[2].joinpath("agent").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert not n.startswith(("training", "evals", "cli", "api")), f"agent/{f.name} imports {n}"
