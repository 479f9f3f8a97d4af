"""training.search_rollout (issue 29 item 2): GRPO rollouts whose <search> calls the retriever answers,
the retrieved <information> masked from the loss, searches counted for the per-search cost."""
from types import SimpleNamespace

import pytest

from agent.config import AgentConfig
from tests.helpers import FakeRetriever, byte_bpe_tokenizer

DOCS = [(1, "work-wyllint.md", "wyllint", "wyllint was created by maid zatiser"),
        (2, "person-maid.md", "maid zatiser", "maid zatiser was born in vusmont"),
        (3, "person-other.md", "ann zatiser", "ann zatiser was born in voumont")]


def _trainer(tok, budget=64):
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=tok.eos_token_id), training=True,
                            eval=lambda: None, train=lambda: None)
    return SimpleNamespace(processing_class=tok, model=model, max_completion_length=budget, temperature=1.0,
                           top_p=1.0, accelerator=SimpleNamespace(unwrap_model=lambda m: m))


def _scripted(tok, turns):
    """A sampler that writes `turns[k]` in round k (padded with EOS, as a batch would be)."""
    calls = []

    def gen(model, t, batch, max_new, trainer):
        calls.append((len(batch), max_new, [t.decode(b) for b in batch]))
        k = len(calls) - 1
        return [t.encode(turns[min(k, len(turns) - 1)], add_special_tokens=False)[:max_new]
                + [t.eos_token_id] * 3 for _ in batch]
    return gen, calls


def test_cut_round_ends_at_eos_or_at_the_search_close():
    from training.search_rollout import cut_round

    tok = byte_bpe_tokenizer()
    eos = {tok.eos_token_id}
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    ids, how = cut_round(enc("x <search>maid</search>") + [tok.eos_token_id] * 2, tok, eos)
    assert how == "search" and tok.decode(ids) == "x <search>maid</search>"
    ids, how = cut_round(enc("Vusmont") + [tok.eos_token_id, 5, 6], tok, eos)
    assert how == "eos" and ids == enc("Vusmont") + [tok.eos_token_id]
    assert cut_round(enc("still going"), tok, eos) == (enc("still going"), "length")


def test_a_search_is_answered_and_its_information_masked():
    from training.search_rollout import search_rollout

    tok = byte_bpe_tokenizer()
    ret = FakeRetriever(DOCS)
    prompt = "<|im_start|>user\nWhere was the creator of wyllint born?<|im_end|>\n<|im_start|>assistant\n"
    gen, calls = _scripted(tok, ["<think>\nwyllint was created by maid zatiser. <search>maid zatiser</search>",
                                 "maid zatiser was born in vusmont.\n</think>\nvusmont"])
    out = search_rollout(ret, AgentConfig(step_k=2, min_passage_score=0.0), {prompt: [1]}, generate=gen)(
        [prompt, prompt], _trainer(tok, budget=400))
    assert out["searches"] == [1, 1] and ret.queries == ["maid zatiser", "maid zatiser"]
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    assert len(ids) == len(mask) and ids[-1] == tok.eos_token_id
    written = tok.decode([t for t, m in zip(ids, mask) if m])
    info = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert written.endswith("</search>maid zatiser was born in vusmont.\n</think>\nvusmont<|im_end|>")
    # the passage the prompt showed (id 1) is not shown again; new ones are numbered after it
    assert info.startswith("\n<information>\n[2] (") and "[3] (" in info and "created by" not in info
    assert info.endswith("</information>\n\n") and "<information>" not in written
    assert [c[0] for c in calls] == [2, 2] and calls[1][2][0].endswith("</information>\n\n")


def test_searches_stop_at_max_retrievals_and_the_budget_counts_only_written_tokens():
    from training.search_rollout import search_rollout

    tok = byte_bpe_tokenizer()
    ret = FakeRetriever(DOCS)
    prompt = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    gen, calls = _scripted(tok, ["<search>zatiser</search>"])  # searches forever
    out = search_rollout(ret, AgentConfig(step_k=1, min_passage_score=0.0, max_retrievals=2), {prompt: []},
                         generate=gen)([prompt], _trainer(tok, budget=40))
    assert out["searches"] == [2] and len(ret.queries) == 2  # the third call is not answered
    written = sum(out["env_mask"][0])
    assert written <= 40 < len(out["completion_ids"][0])  # information does not spend the policy's budget
    assert all(n <= 40 for _, n, _ in calls)


def test_an_unknown_prompt_is_a_key_error():
    from training.search_rollout import search_rollout

    tok = byte_bpe_tokenizer()
    gen, _ = _scripted(tok, ["x"])
    with pytest.raises(KeyError):
        search_rollout(FakeRetriever(DOCS), AgentConfig(), {}, generate=gen)(["nope"], _trainer(tok))


def test_search_cost_reward_reads_the_rollouts_searches():
    from training.rewards import get_reward_funcs

    (f,) = get_reward_funcs(["search_cost"], search_cost=0.25)
    assert f(["a", "b"], searches=[0, 2], trainer_state=None) == [0.0, -0.5]
    assert f(["a"], trainer_state=None) == [None]


def test_two_step_grpo_on_hops_searches_through_the_task_index(tmp_path, monkeypatch):
    """`python -m training.grpo` with task hops on a tiny model: the rows carry the question's own passages,
    the rollout's <search> calls go to the task index (built through the public ingest path), the rewards
    see each completion's searches, and training changes the parameters."""
    import json

    import torch

    import tasks.hops
    import training.search_rollout as sr
    from tests.helpers import FakeEmbedder, run_tiny_grpo, tiny_llama
    from training.config import ScriptArguments

    tok = byte_bpe_tokenizer()
    ckpt = tmp_path / "tiny"
    tiny_llama(len(tok), max_positions=4096).save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    (ckpt / "thinkgate.json").write_text(json.dumps({"top_k": 1, "step_k": 1, "min_passage_score": 0.0}))
    real_build = tasks.hops.build_index
    monkeypatch.setattr(tasks.hops, "build_index", lambda c, i, embedder=None, progress=False:
                        real_build(c, i, FakeEmbedder(), progress))

    def gen(model, t, batch, max_new, trainer):  # even rows search once, odd rows answer at once
        out = []
        for k, b in enumerate(batch):
            text = t.decode(b)
            turn = ("x</think>\nVusmont" if "</information>" in text else
                    "<search>zatiser</search>" if k % 2 == 0 else "Vusmont")
            out.append(t.encode(turn, add_special_tokens=False)[:max_new] + [t.eos_token_id])
        return out

    monkeypatch.setattr(sr, "_hf_generate", gen)
    seen: list = []
    script = ScriptArguments(task="hops", num_examples=2, eval_examples=0, index_dir=str(tmp_path / "hops" / "index"),
                             reward_funcs=["correct", "search_cost", "test_spy"])
    before, after = run_tiny_grpo(tmp_path, ckpt, script, lambda completions, searches=None: (
        seen.append(list(searches)), [0.0] * len(completions))[1])
    assert seen and all(s == [1, 0] * (len(s) // 2) for s in seen)
    assert (tmp_path / "hops" / "corpus").is_dir()
    recs = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    costs = [r["rewards/search_cost/mean"] for r in recs if "rewards/search_cost/mean" in r]
    assert costs and all(c == pytest.approx(-0.05) for c in costs)  # half the completions pay 0.1
    assert any(not torch.equal(before[k], v) for k, v in after.items())
