"""max_completion_tokens bounds everything generated for a turn (issue 9): a property test over
every reasoning effort, limits from 1 up and four model behaviours, plain and streaming.
The mock policy counts one token per character, so every count here is exact."""
import json

import httpx
import pytest

from agent.config import AgentConfig
from agent.state import EFFORTS
from agent.turn import TokenBudget, TokenLedger
from api.app import create_app
from api.settings import Settings
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder, MockPolicy


def script(prompt, kind):
    q = prompt.rsplit("Question:", 1)[-1]
    if kind == "draft":
        if "opens" in q:
            return ("<think>", 0.1, False)
        if "easy" in q:
            return ("Short.", 0.1, True)
        return ("Hmm, not sure " * 3, 3.0, False)
    if kind == "step":
        return ("A long thought that goes on and on. " * 3 + "\n\n", 0.5, False)
    if "sure" in q:  # the probe is certain at once
        return ("Sure answer.", 0.1, True)
    return ("a rambling answer " * 30, 2.0, False)  # uncertain probes, an answer longer than any limit


QUESTIONS = ("easy one", "hard one", "hard but sure", "model opens think")
LIMITS = (1, 2, 3, 5, 7, 8, 16, 17, 40, 96, 300)


@pytest.fixture
async def client(tmp_path):
    retriever = Retriever(tmp_path / "idx", FakeEmbedder())
    app = create_app(Settings(cache_dir=tmp_path), policy=MockPolicy(script), retriever=retriever,
                     agent_config=AgentConfig(tau_think=1.0, tau_exit=0.5, draft_tokens=16, probe_tokens=8))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            yield c


async def _stream_usage(client, body) -> tuple[dict, int, int]:
    """(usage, characters of content, characters of reasoning) of a streamed answer."""
    content = reasoning = 0
    usage = None
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True,
                                                                  "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            if chunk.get("usage"):
                usage = chunk["usage"]
            for ch in chunk["choices"]:
                content += len(ch["delta"].get("content") or "")
                reasoning += len(ch["delta"].get("reasoning_content") or "")
    return usage, content, reasoning


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_usage_never_exceeds_the_limit(client, stream):
    seen_think = seen_length = 0
    for effort in EFFORTS:
        for limit in LIMITS:
            for q in QUESTIONS:
                key = "max_completion_tokens" if limit % 2 else "max_tokens"  # both spellings bound the same
                body = {"messages": [{"role": "user", "content": q}], "reasoning_effort": effort, key: limit}
                if stream:
                    usage, content, _ = await _stream_usage(client, body)
                else:
                    r = await client.post("/v1/chat/completions", json=body)
                    assert r.status_code == 200, r.text
                    j = r.json()
                    usage, content = j["usage"], len(j["choices"][0]["message"]["content"])
                    seen_think += j["thinkgate"]["decision"] == "think"
                    seen_length += j["choices"][0]["finish_reason"] == "length"
                where = f"effort={effort} {key}={limit} q={q!r}"
                assert usage["completion_tokens"] <= limit, where
                assert usage["completion_tokens_details"]["reasoning_tokens"] <= usage["completion_tokens"], where
                assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], where
                assert content <= limit, where  # shown answer text (1 char = 1 token) within the limit too
    if not stream:
        assert seen_think > 50 and seen_length > 50  # the grid really exercises thinking and truncation


async def test_answer_keeps_room_when_thinking(client):
    """Thinking stops at its share; the answer always gets the rest."""
    r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hard one"}],
                                                         "reasoning_effort": "high", "max_completion_tokens": 96})
    j = r.json()
    tg, usage = j["thinkgate"], j["usage"]
    assert tg["decision"] == "think" and tg["exit_reason"] == "budget"
    assert tg["budget"] == {"total": 96, "think": 72}
    assert usage["completion_tokens_details"]["reasoning_tokens"] <= 72
    assert usage["completion_tokens"] == 96 and j["choices"][0]["finish_reason"] == "length"
    assert len(j["choices"][0]["message"]["content"]) >= 96 - 72 - 1  # the answer's room was used


def test_budget_split_and_ledger_sums():
    cfg = AgentConfig(think_share=0.5)
    assert TokenBudget.split(10, cfg) == TokenBudget(10, 5)
    assert TokenBudget.split(1, cfg) == TokenBudget(1, 0)
    with pytest.raises(ValueError, match="max_completion_tokens must be >= 1, got 0"):
        TokenBudget.split(0, cfg)
    with pytest.raises(ValueError, match=r"think_share must be in \[0, 1\)"):
        AgentConfig(think_share=1.0)
    t = TokenLedger.from_counts({"prompt": 10, "information": 5, "draft": 2, "probe": 3, "reasoning": 7, "answer": 4})
    assert (t.completion, t.hidden, t.prompt_total) == (16, 10, 15)
    with pytest.raises(ValueError, match="unknown token kinds"):
        TokenLedger.from_counts({"thinking": 1})
