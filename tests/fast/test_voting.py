"""Self-consistency (issue 11): vote aggregation and the Adaptive-Consistency stopping rule on
fixed inputs, and the graph's vote path with a scripted policy (plain, streamed, stored)."""
from collections import Counter

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent.config import AgentConfig
from agent.runner import Agent
from evals.scaling import Sample, scaling_rows
from agent.voting import adaptive_vote, beta_stop, normalize_answer, vote, weighted_vote
from api.app import create_app
from api.settings import Settings
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder, FakeRetriever, MockPolicy


def test_vote_and_stopping_rule_on_fixed_inputs():
    assert normalize_answer("So the total is -12.") == "-12"
    assert vote(["3", "4", "4", "3", "5"])[0] == "3"  # tie 2-2: the earlier one
    assert vote(["3", "4", "4", "3"], [-1.0, -0.1, -0.1, -1.0])[0] == "4"  # tie: the more certain
    assert weighted_vote(["3", "4", "4"], [0.0, -3.0, -3.0]) == "3"
    # Beta(v1 + 1, v2 + 1) tail beyond 1/2 against 0.95
    assert not beta_stop(Counter({"a": 3})) and beta_stop(Counter({"a": 4}))
    assert not beta_stop(Counter({"a": 5, "b": 1})) and beta_stop(Counter({"a": 6, "b": 1}))
    r = adaptive_vote(["a", "b", "a", "a", "a", "a", "a", "a"])
    assert (r.answer, r.used, r.stop) == ("a", 7, "decisive")
    r = adaptive_vote(["a", "b"] * 4)
    assert (r.used, r.stop) == (8, "max_samples")
    assert adaptive_vote(["a"] * 8, confidence=0.9).used == 3


class _Rec:  # the fields of evals.forced.ForcedRecord that scaling_rows reads
    def __init__(self, id, think_text, think_score, think_tokens=10, learned=True, draft_entropy=0.0):
        self.id, self.bucket, self.think_text, self.think_score = id, "hard", think_text, think_score
        self.think_tokens, self.learned_think, self.direct_score, self.direct_tokens = think_tokens, learned, 0.0, 2
        self.draft_entropy, self.draft_tokens = draft_entropy, 3


def test_scaling_rows_modes():
    from tasks import Item

    it = Item("x", "arith", "What is 2 + 2?", "4", "hard", "2 + 2 = 4")
    rec = _Rec("x", "<think>\n2 + 2 = 5\n</think>\n5", 0.0)
    samples = [Sample(f"s{i}", 12, 1.0, "4", -0.1) for i in range(7)]
    rows = scaling_rows([it, it], [rec, rec], [samples, samples], [2.0, 0.1], tau_vote=1.0)
    assert rows["vote@8"][0]["score"] == 1.0 and rows["vote@8"][0]["think_tokens"] == 10 + 7 * 12
    assert rows["best-of-8"][0]["score"] == 1.0
    # uncertain trace: sampled until the Beta rule (greedy "5", then 4, 4, 4, 4, 4 → 5-1 is not yet decisive)
    assert rows["adaptive"][0]["score"] == 1.0 and rows["adaptive"][0]["think_tokens"] == 10 + 6 * 12
    # certain trace: the one greedy answer, no samples
    assert rows["adaptive"][1]["score"] == 0.0 and rows["adaptive"][1]["think_tokens"] == 10


def test_adaptive_builds_on_the_gate_not_only_the_models_choice():
    """A model that answers at once on its own is voted on only where the served gate (draft entropy
    above tau_think) makes it think; the gate's hidden draft tokens are counted then."""
    from tasks import Item

    it = Item("x", "arith", "What is 2 + 2?", "4", "hard", "2 + 2 = 4")
    unsure = _Rec("x", "<think>\n2 + 2 = 5\n</think>\n5", 0.0, learned=False, draft_entropy=2.0)
    sure = _Rec("y", "<think>\n2 + 2 = 5\n</think>\n5", 0.0, learned=False, draft_entropy=0.1)
    samples = [Sample(f"s{i}", 12, 1.0, "4", -0.1) for i in range(7)]
    rows = scaling_rows([it, it], [unsure, sure], [samples, samples], [2.0, 2.0], tau_vote=1.0, tau_think=0.5)
    a = rows["adaptive"]
    assert a[0]["thought"] and a[0]["score"] == 1.0 and a[0]["hidden_tokens"] == 3
    assert not a[1]["thought"] and a[1]["answer_tokens"] == 2 and a[1]["think_tokens"] == 0
    # without a gate threshold only the model's own choice counts: neither item thinks
    plain = scaling_rows([it, it], [unsure, sure], [samples, samples], [2.0, 2.0], tau_vote=1.0)
    assert not any(r["thought"] for r in plain["adaptive"])


def voting_script():
    calls = {"step": 0}

    def script(prompt, kind):
        if kind == "draft":
            return ("Hmm", 3.0, False)
        if kind == "step":
            calls["step"] += 1
            if calls["step"] <= 2:  # the greedy pass: two reasoning steps
                return ("Let me add.\n\n", 0.5, False)
            return ("2 + 40 = 42\n</think>\n42", 0.3, True)  # every voting sample says 42
        return ("41", 2.0, True)  # probes stay uncertain; the greedy answer is 41
    return script


def _agent():
    return Agent(MockPolicy(voting_script()), FakeRetriever([]), AgentConfig(tau_think=1.0, tau_exit=0.5, max_steps=2),
                 checkpointer=InMemorySaver())


async def test_effort_high_votes_and_overrides_the_greedy_answer():
    agent = _agent()
    turn = await agent.run([{"role": "user", "content": "what is 2 + 40?"}], effort="high", thread_id="t")
    v = turn.details["votes"]
    assert turn.answer == "42" and v["chosen"] == "42" and v["changed"] is True
    assert [s["key"] for s in v["samples"]] == ["41"] + ["42"] * 6 and v["stop"] == "decisive"
    assert [s["seed"] for s in v["samples"][1:]] == [2, 3, 4, 5, 6, 7]  # seeds recorded
    assert turn.tokens.samples == 6 * len("2 + 40 = 42\n</think>\n42") + 6  # + EOS each
    state = await agent.graph.aget_state({"configurable": {"thread_id": "t"}})
    assert state.values["messages"][-1].content == "42"  # the thread keeps the chosen answer


async def test_no_vote_unless_asked_or_when_certain():
    agent = _agent()
    turn = await agent.run([{"role": "user", "content": "q"}], effort="auto")
    assert turn.details["votes"] is None and turn.answer == "41"
    turn = await agent.run([{"role": "user", "content": "q"}], effort="auto", samples=3)
    assert turn.details["votes"]["stop"] == "max_samples" and len(turn.details["votes"]["samples"]) == 3
    with pytest.raises(ValueError, match="max_samples must be in 1..32"):
        await agent.run([{"role": "user", "content": "q"}], samples=0)
    calm = Agent(MockPolicy(voting_script()), FakeRetriever([]),
                 AgentConfig(tau_think=1.0, tau_exit=0.5, max_steps=2, tau_vote=0.6), checkpointer=InMemorySaver())
    turn = await calm.run([{"role": "user", "content": "q"}], effort="high")  # steps at 0.5 nats ≤ τ_vote
    assert turn.details["votes"] is None and turn.answer == "41"


async def test_stream_shows_samples_as_reasoning_and_the_choice_as_content(tmp_path):
    app = create_app(Settings(cache_dir=tmp_path), policy=MockPolicy(voting_script()),
                     retriever=Retriever(tmp_path / "idx", FakeEmbedder()),
                     agent_config=AgentConfig(tau_think=1.0, tau_exit=0.5, max_steps=2))
    import json

    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            body = {"messages": [{"role": "user", "content": "2 + 40?"}], "reasoning_effort": "high", "stream": True}
            r = await c.post("/v1/chat/completions", json=body)
            events = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
            r2 = await c.post("/v1/chat/completions", json={**body, "stream": False, "max_samples": 2})
    reasoning = "".join(ch["delta"].get("reasoning_content") or "" for e in events for ch in e.get("choices", []))
    content = "".join(ch["delta"].get("content") or "" for e in events for ch in e.get("choices", []))
    assert "[sample 1: greedy] 41" in reasoning and "[sample 2/8]" in reasoning
    assert content == "42"  # only the chosen answer
    j = r2.json()
    assert j["thinkgate"]["votes"]["stop"] == "max_samples" and len(j["thinkgate"]["votes"]["samples"]) == 2
    assert j["usage"]["completion_tokens_details"]["reasoning_tokens"] >= j["thinkgate"]["tokens"]["samples"] > 0
