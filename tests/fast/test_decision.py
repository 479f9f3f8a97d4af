"""The learned mode decision (issue 27, `training.decision`): the advantage and loss, training on a
tiny random Qwen2 moves p(think) the way the paired rollouts say, the saved adapter is fp16, the
agent's ``decision: learned`` follows the first token, and `evals.learned` pairs with the base's rows."""
import json
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent.config import AgentConfig
from agent.runner import Agent
from tests.helpers import FakeRetriever, MockPolicy


def _row(set_name, idx, think, direct, t_tok=200, d_tok=5, seed=1):
    return {"id": f"{set_name}-s{seed}-{idx}", "think_score": think, "direct_score": direct, "think_tokens": t_tok,
            "direct_tokens": d_tok, "meta": {"set": set_name}}


def test_advantage_labels_and_drops_rows_without_signal():
    from tests.helpers import byte_bpe_tokenizer
    from training.decision import decision_examples, mode_advantage

    assert mode_advantage(_row("gsm", 0, 1.0, 0.0), 0.05, 0.02) > 0          # thinking fixed it
    assert mode_advantage(_row("onestep", 0, 1.0, 1.0, 60), 0.05, 0.02) < 0  # both right: pay for tokens
    assert mode_advantage(_row("onestep", 0, 0.0, 1.0), 0.0, 0.0) == -1.0    # thinking broke it
    rows = [_row("gsm", 0, 1.0, 0.0), _row("onestep", 1, 1.0, 1.0, 5, 5)]    # second: A = −δ... unless δ = 0
    ex = decision_examples(rows, byte_bpe_tokenizer(), delta=0.0, cost_per_100=0.0)
    assert [(e["id"], e["label"]) for e in ex] == [("gsm-s1-0", 1)]            # A = 0 carries no signal
    assert ex[0]["prompt"] and ex[0]["weight"] == pytest.approx(1.0)


def test_rows_that_are_not_training_rollouts_are_refused(tmp_path):
    from training.decision import DecisionConfig, decision_examples

    f = tmp_path / "test-gsm.jsonl"
    f.write_text("")
    with pytest.raises(ValueError, match="must be training rollouts"):
        DecisionConfig(rows=[str(f)])
    with pytest.raises(FileNotFoundError, match="no such rollout file"):
        DecisionConfig(rows=[str(tmp_path / "train-missing.jsonl")])
    with pytest.raises(LookupError, match="names no set"):
        decision_examples([{"id": "x", "think_score": 1, "direct_score": 0, "think_tokens": 1, "direct_tokens": 1}], None)


def test_training_moves_p_think_toward_the_better_mode_and_saves_an_fp16_adapter(tmp_path):
    from safetensors.torch import load_file

    from tests.helpers import byte_bpe_tokenizer, tiny_qwen2
    from training.decision import DecisionConfig, train

    tok = byte_bpe_tokenizer()
    model_dir = tmp_path / "base"
    base = tiny_qwen2(len(tok))
    base.lm_head.weight.data *= 50  # random init's logits are too flat for any p(think) > 0.5 after RMSNorm
    base.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rows = [_row("gsm", i, 1.0, 0.0) for i in range(4)] + [_row("onestep", i, 0.0, 1.0, 60) for i in range(4)]
    f = tmp_path / "train-mix.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dev = tmp_path / "dev-mix.jsonl"
    dev.write_text("".join(json.dumps(_row(s, i, *sc, seed=2)) + "\n" for s, sc in (("gsm", (1.0, 0.0)), ("onestep", (0.0, 1.0)))
                           for i in range(3)))
    out = train(DecisionConfig(rows=[str(f)], dev_rows=[str(dev)], model_name_or_path=str(model_dir), output_dir=str(tmp_path / "run"),
                               layers=2, lora_r=4, learning_rate=3e-3, epochs=10, batch_size=4, threads=1),
                log=lambda _: None)
    summary = json.loads((out / "summary.json").read_text())
    per = summary["per_set"]
    assert per["gsm"]["label_think"] == 4 and per["onestep"]["label_think"] == 0
    assert per["gsm"]["think_after"] == 4 and per["onestep"]["think_after"] == 0
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]
    assert summary["best_epoch"] >= 1 and summary["best_dev"]["think_rate"] == {"gsm": 1.0, "onestep": 0.0}
    assert summary["best_dev"]["accuracy"] == 1.0  # held-out rows of the same families: the decision transfers
    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert weights and all(str(v.dtype) == "torch.float16" for v in weights.values())
    assert json.loads((out / "thinkgate.json").read_text())["decision"] == "learned"
    assert (out / "config.json").is_file()  # the merged checkpoint beside the adapter
    again = train(DecisionConfig(rows=[str(f)], model_name_or_path=str(model_dir), output_dir=str(out)),
                  log=lambda _: None)  # a finished run is not repeated
    assert again == out and json.loads((out / "summary.json").read_text()) == summary


def _agent(script, **cfg):
    pol = MockPolicy(script)
    return Agent(pol, FakeRetriever([]), AgentConfig(**cfg), checkpointer=InMemorySaver()), pol


def _script(prompt, kind):
    """The first token of a hard question opens <think>; an easy one's draft is uncertain but an answer."""
    if kind == "draft":
        return ("<think>", 0.1, False) if "hard" in prompt else ("Paris.", 3.0, True)
    if kind == "step":
        return ("Step.\n\n", 0.2, False)
    return ("42", 0.1, True)


async def test_learned_decision_follows_the_first_token_not_the_entropy():
    agent, pol = _agent(_script, decision="learned", tau_think=1.0, tau_exit=0.5)
    easy = await agent.run([{"role": "user", "content": "easy one"}])
    assert easy.metadata["decision"] == "answer" and "first token answers" in easy.metadata["reason"]
    assert easy.answer.startswith("Paris")  # entropy 3.0 > τ 1.0, yet the model's choice holds
    assert pol.calls[0][2].max_tokens == 1  # the decision reads one token
    pol.calls.clear()
    hard = await agent.run([{"role": "user", "content": "hard one"}], thread_id="t2")
    assert hard.metadata["decision"] == "think" and "first token opens <think>" in hard.metadata["reason"]
    assert [k for k, _, _ in pol.calls][:2] == ["draft", "step"]  # no answer draft once the token said think


async def test_both_thinks_when_either_signal_says_so_and_effort_still_overrides():
    agent, _ = _agent(_script, decision="both", tau_think=1.0)
    turn = await agent.run([{"role": "user", "content": "easy one"}])
    assert turn.metadata["decision"] == "think" and "entropy" in turn.metadata["reason"]
    agent, pol = _agent(_script, decision="learned")
    turn = await agent.run([{"role": "user", "content": "hard one"}], effort="none")
    assert turn.metadata["decision"] == "answer" and all(p.max_tokens != 1 for _, _, p in pol.calls)
    with pytest.raises(ValueError, match="decision must be one of"):
        AgentConfig(decision="coin")


async def test_effort_none_answers_after_an_empty_thought_when_the_draft_opens_think():
    """A model that opens <think> in its forced direct answer (the 1.5B did on a counting request,
    and the API returned "<think> </think>") still answers at effort none: the draft is discarded
    (hidden work) and the answer follows a closed, empty thought and the forced prefix."""
    agent, pol = _agent(_script, answer_prefix="Answer:")
    turn = await agent.run([{"role": "user", "content": "hard one"}], effort="none")
    assert turn.metadata["decision"] == "answer" and turn.answer == "42"
    assert turn.tokens.draft == 0 and turn.tokens.answer == len("42") + 1  # + EOS
    assert turn.tokens.probe == len("<think>")  # the discarded draft is hidden work
    kind, prompt, _ = pol.calls[-1]
    assert kind == "after_think" and prompt.endswith("assistant\n<think>\n</think>\nAnswer:")


def test_learned_report_pairs_with_the_base_rows():
    from evals.learned import set_report

    rows = {f"gsm-s3-{i}": {"id": f"gsm-s3-{i}", "thought": i < 2, "tokens": 100 if i < 2 else 5,
                            "score": 1.0 if i == 0 else 0.0} for i in range(4)}
    base = {f"gsm-s3-{i}": {"think_score": 1.0 if i in (0, 3) else 0.0, "direct_score": 0.0, "think_tokens": 200,
                            "direct_tokens": 10} for i in range(4)}
    r = set_report(rows, base)
    assert r["think_rate"] == 0.5 and r["learned"]["accuracy"] == 0.25
    assert r["base"]["always"]["accuracy"] == 0.5 and r["base"]["never"]["accuracy"] == 0.0
    assert r["learned_vs_always"]["diff"] == pytest.approx(-0.25)  # item 3: thinking would have helped
    assert r["tokens_vs_always"] == pytest.approx((100 + 100 + 5 + 5) / 4 / 200)
    assert r["drift"]["diff"] == 0.0  # each learned branch scored as the base's same branch
    assert "vs_start" not in r
    start = {i: {**row, "thought": True, "tokens": 200, "score": 1.0 if i == "gsm-s3-3" else 0.0}
             for i, row in rows.items()}
    r = set_report(rows, base, start)  # against the checkpoint training started from: item 0 up, item 3 down
    assert r["start"]["think_rate"] == 1.0 and r["this_on_start"]["think_rate"] == 0.5
    assert r["vs_start"]["diff"] == 0.0 and (r["vs_start"]["a_only"], r["vs_start"]["b_only"]) == (1, 1)


def test_prepare_merges_the_adapter_once_and_checks_its_sha256(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from policy.fetch import PrepareError
    from policy.models import file_sha256, merge_adapter
    from tests.helpers import byte_bpe_tokenizer, tiny_qwen2
    from training.decision import save_adapter_fp16

    tok = byte_bpe_tokenizer()
    base_dir = tmp_path / "base"
    tiny_qwen2(len(tok)).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    peft = get_peft_model(tiny_qwen2(len(tok)), LoraConfig(r=2, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    f = save_adapter_fp16(peft, tmp_path / "adapter")
    with pytest.raises(PrepareError, match="verify: .*expected 000000000000"):
        merge_adapter(base_dir, tmp_path / "adapter", tmp_path / "merged", "0" * 64)
    out = merge_adapter(base_dir, tmp_path / "adapter", tmp_path / "merged", file_sha256(f))
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([tok.encode("hello world")])
    with torch.no_grad():
        want = peft.half().float()(input_ids=ids).logits  # the fp16 adapter, as shipped
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-3) and (out / "tokenizer.json").is_file()


def test_a_newly_pinned_adapter_is_merged_again_and_an_unchanged_one_is_not(tmp_path, monkeypatch):
    from dataclasses import replace

    import torch
    from peft import LoraConfig, get_peft_model

    from policy.models import ADAPTER_STAMP, REGISTRY, ModelSpec, file_sha256, resolve_policy
    from tests.helpers import byte_bpe_tokenizer, tiny_qwen2
    from training.decision import save_adapter_fp16

    tok = byte_bpe_tokenizer()
    base_dir = tmp_path / "base"
    tiny_qwen2(len(tok)).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    shas = []
    for k in range(2):  # two different adapters, as two commits of policy/adapters would hold
        model = tiny_qwen2(len(tok))
        torch.manual_seed(k)  # the LoRA weights (tiny_qwen2 seeds the base itself)
        peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
        shas.append(file_sha256(save_adapter_fp16(peft, tmp_path / f"adapter{k}")))
    assert shas[0] != shas[1]
    spec = ModelSpec("tiny-trained", "none", "int8", base=str(base_dir), adapter=str(tmp_path / "adapter0"),
                     adapter_sha256=shas[0])
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    out = Path(resolve_policy(spec.name, root=tmp_path / "cache", log=lambda _: None))
    assert (out / ADAPTER_STAMP).read_text().strip() == shas[0]
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert resolve_policy(spec.name, root=tmp_path / "cache", log=lambda _: None) == str(out)
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime  # unchanged pin: no second merge
    monkeypatch.setitem(REGISTRY, spec.name, replace(spec, adapter=str(tmp_path / "adapter1"), adapter_sha256=shas[1]))
    lines = []
    assert resolve_policy(spec.name, root=tmp_path / "cache", log=lines.append) == str(out)
    assert (out / ADAPTER_STAMP).read_text().strip() == shas[1] and any("merge" in ln for ln in lines)


def test_auroc_ranks_p_think_and_the_base_gate_against_thinking_helped(tmp_path):
    from argparse import Namespace

    from evals.learned import auroc_report
    from tasks import load_items
    from tests.helpers import byte_bpe_tokenizer, tiny_qwen2

    tok = byte_bpe_tokenizer()
    ckpt = tmp_path / "ckpt"
    tiny_qwen2(len(tok)).save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    base = tmp_path / "base"
    base.mkdir()
    helped = [True, False, True, False, False]
    rows = [{"id": it.id, "think_score": float(h), "direct_score": 0.0 if k < 3 else 1.0,
             "draft_entropy": 2.0 if h else 0.5, "meta": {"set": "onestep"}} for k, (it, h) in enumerate(zip(load_items("onestep", 5, 3), helped))]
    (base / "test-onestep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = auroc_report(Namespace(model=str(ckpt), sets=["onestep"], split="test", base=str(base), out=str(tmp_path / "out")))
    assert (res["n"], res["helped"], res["wrong_direct"]) == (5, 2, 3)
    assert res["auroc_gate_vs_helped"] == 1.0  # the gate score was made to equal the label
    assert 0.0 <= res["auroc_p_think_vs_helped"] <= 1.0
    assert all(0.0 < r["p_think"] < 1.0 for r in res["items"])
    assert json.loads((tmp_path / "out" / "ckpt" / "auroc.json").read_text())["n"] == 5
