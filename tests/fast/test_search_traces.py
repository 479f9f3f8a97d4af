"""training.search (issue 29): warm-up rows that search, built segment by segment as the agent builds
its transcript, the retrieved <information> masked from the loss; replayed through the real agent, a
row's tokens are exactly the served transcript."""
import asyncio

import pytest

from agent.config import AgentConfig
from tasks import load_items
from tasks.hops import build_index
from tests.helpers import FakeEmbedder, byte_bpe_tokenizer

CFG = dict(answer_prefix="", tau_think=99.0, tau_exit=0.0, min_passage_score=0.0)


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    d = tmp_path_factory.mktemp("hops")
    return build_index(d / "corpus", d / "index", FakeEmbedder())


def _bridge_row(retriever, tok):
    from training.search import build_row

    for it in load_items("hops-bridge", 20, 1):
        row = build_row(it, tok, retriever, AgentConfig(**CFG))
        if row is not None and row["searches"]:
            return it, row
    pytest.skip("no bridge item whose search finds its page with the fake embedder")


def test_bridge_row_searches_and_masks_the_information(retriever):
    tok = byte_bpe_tokenizer()
    it, row = _bridge_row(retriever, tok)
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels)
    learned = tok.decode([t for t, l in zip(ids, labels) if l != -100])
    masked = tok.decode([t for t, l in zip(ids, labels) if l == -100])
    assert learned.startswith("<think>\n") and f"<search>{it.meta['bridge']}</search>" in learned
    assert "<information>" not in learned and "<information>" in masked  # retrieved text is not trained on
    assert f"was born in {it.answer}.\n</think>\n{it.answer}" in learned and learned.endswith("<|im_end|>")


def test_a_question_whose_passages_suffice_is_answered_at_once(retriever):
    from training.search import build_row

    tok = byte_bpe_tokenizer()
    for it in load_items("hops-single", 10, 1):
        row = build_row(it, tok, retriever, AgentConfig(**CFG))
        if row is not None and row["searches"] == 0:
            learned = tok.decode([t for t, l in zip(row["input_ids"], row["labels"]) if l != -100])
            assert learned == it.answer + "<|im_end|>"
            return
    pytest.skip("the fake embedder showed no single-hop page")


def test_a_comparison_thinks_through_both_years_even_when_its_pages_are_shown(retriever):
    from tasks.hops import world
    from training.search import build_row

    tok = byte_bpe_tokenizer()
    years = {w.name: w.year for w in world().works}
    rows = [(it, build_row(it, tok, retriever, AgentConfig(**CFG))) for it in load_items("hops-comparison", 10, 1)]
    rows = [(it, r) for it, r in rows if r is not None]
    assert rows, "no comparison row kept"
    for it, row in rows:
        learned = tok.decode([t for t, l in zip(row["input_ids"], row["labels"]) if l != -100])
        a, b = it.meta["options"]
        first, second = sorted((a, b), key=years.__getitem__)
        assert first == it.answer
        assert learned.startswith("<think>\n") and learned.endswith(f"</think>\n{it.answer}<|im_end|>")
        for name in (a, b):
            assert f"{name} was first released in {years[name]}." in learned
        assert f"{years[first]} is earlier than {years[second]}, so {first} was released first." in learned


def test_a_row_replayed_through_the_agent_is_its_served_transcript(retriever):
    """A policy that writes the row's completion, step by step, through the real graph and retriever:
    the agent's transcript is the row's tokens (what is trained is what is served)."""
    from agent.runner import Agent
    from tests.helpers import MockPolicy

    tok = byte_bpe_tokenizer()
    it, row = _bridge_row(retriever, tok)
    full = tok.decode(row["input_ids"])
    head = full.rsplit("<|im_start|>assistant\n", 1)[0] + "<|im_start|>assistant\n"
    target = full[len(head):].removesuffix("<|im_end|>")

    def script(prompt, kind):
        so_far = prompt[len(head):] if prompt.startswith(head) else None
        if so_far is not None and target.startswith(so_far):
            return target[len(so_far):], 2.0, True
        return "unsure", 2.0, False  # a probe after the agent's own </think>: uncertain, rolled back

    policy = MockPolicy(script)
    turn = asyncio.run(Agent(policy, retriever, AgentConfig(**CFG)).run(
        [{"role": "user", "content": it.question}], effort="auto"))
    assert turn.decision == "think" and turn.answer == it.answer
    assert [r["trigger"] for r in turn.details["retrievals"]] == ["question"] + ["model"] * row["searches"]
    assert policy.detokenize(turn.transcript) == full.removesuffix("<|im_end|>")


def test_sft_refuses_search_file_with_dual_mode_options(tmp_path):
    from training.sft import SFTScriptArguments

    f = tmp_path / "t.jsonl"
    f.write_text("{}\n")
    with pytest.raises(ValueError, match="pair_modes"):
        SFTScriptArguments(search_file=str(f), pair_modes=True)
    with pytest.raises(ValueError, match="existing file"):
        SFTScriptArguments(search_file=str(tmp_path / "none.jsonl"))
    with pytest.raises(ValueError, match="JSON object"):
        SFTScriptArguments(agent_config="[1]")
