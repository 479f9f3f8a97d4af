"""training.rollout.served_mode_rollout and ``task: mix`` (issue 27 item 3): GRPO groups forced half
to think and half to answer at once, each mode the served agent's branch (forced ``Answer:`` direct
answer; ``<think>`` … ``</think>`` then the agent's answer opening), only the decision token among
the forced ones left in the loss."""
from types import SimpleNamespace

import pytest

from tests.helpers import byte_bpe_tokenizer


def _trainer(tok, budget=64, g=2):
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=tok.eos_token_id), training=True,
                            eval=lambda: None, train=lambda: None)
    return SimpleNamespace(processing_class=tok, model=model, max_completion_length=budget, num_generations=g,
                           temperature=1.0, top_p=1.0, accelerator=SimpleNamespace(unwrap_model=lambda m: m))


def _scripted(tok, replies):
    """A sampler answering each row by the first key of `replies` its text ends with (after EOS padding)."""
    calls = []

    def gen(model, t, batch, max_new, trainer, stops):
        calls.append((max_new, tuple(stops)))
        out = []
        for b in batch:
            text = t.decode(b)
            reply = next(v for k, v in replies.items() if text.endswith(k))
            out.append(t.encode(reply, add_special_tokens=False) + [t.eos_token_id] * 2)
        return out
    return gen, calls


def test_each_mode_is_the_served_branch_and_only_the_decision_token_of_the_forced_ones_is_trained():
    from training.rollout import served_mode_rollout

    tok = byte_bpe_tokenizer()
    gen, calls = _scripted(tok, {"</think>\nAnswer:": " 12", "Answer:": " 12\n\nmore",
                                 "<think>\n": "7 + 5 = 12\n</think>tail"})
    out = served_mode_rollout("Answer:", generate=gen)(["Q1", "Q1", "Q2", "Q2"], _trainer(tok))
    assert out["forced_mode"] == ["think", "no_think"] * 2
    texts = [tok.decode(c) for c in out["completion_ids"]]
    assert texts[1] == "Answer: 12\n\n"  # stopped at the blank line, as the gate's draft
    assert texts[0] == "<think>\n7 + 5 = 12\n</think>\nAnswer: 12<|im_end|>"  # the agent's opening after </think>
    assert [c[1] for c in calls] == [("\n\n", "<think>"), ("</think>",), ("\n\n",)]
    for ids, mask, text in zip(out["completion_ids"], out["env_mask"], texts):
        assert len(ids) == len(mask) and mask[0] == 1  # the decision token is trained
        forced = tok.decode([t for t, m in zip(ids, mask) if m == 0])
        assert forced in ("Answer:"[1:], "<think>\n"[1:] + "\nAnswer:")  # the rest of what was forced is not
    assert out["prompt_ids"][0] == tok.encode("Q1", add_special_tokens=False)


def test_a_think_branch_that_ends_its_turn_gets_no_answer_phase_and_budgets_hold():
    from training.rollout import served_mode_rollout

    tok = byte_bpe_tokenizer()
    gen, calls = _scripted(tok, {"Answer:": "x" * 50, "<think>\n": "12"})
    out = served_mode_rollout("Answer:", direct_tokens=5, generate=gen)(["Q", "Q"], _trainer(tok, budget=8))
    think, direct = (tok.decode(c) for c in out["completion_ids"])
    assert think == "<think>\n12<|im_end|>" and len(calls) == 2  # ended inside <think>: nothing appended
    assert direct == "Answer:" + "x" * 5
    with pytest.raises(ValueError, match="answer_prefix"):
        served_mode_rollout("")
    with pytest.raises(ValueError, match="think_share"):
        served_mode_rollout("Answer:", think_share=1.5)


def test_mix_config_keeps_the_held_out_families_out():
    from training.config import MIX_REWARDS, ScriptArguments

    assert ScriptArguments(task="mix").reward_funcs == MIX_REWARDS
    with pytest.raises(ValueError, match="held-out families"):
        ScriptArguments(task="mix", mix_sets=["gsm", "letters"])
    with pytest.raises(ValueError, match="seed_data must be 1"):
        ScriptArguments(task="mix", seed_data=3)


def test_two_step_grpo_on_the_mix_trains_the_served_branches(tmp_path, monkeypatch):
    """`python -m training.grpo` with task mix on a tiny Qwen2 model: rows are train-split items of the
    numeric sets on the served prompt, completions come from the served-mode rollout, the rewards see
    both modes, and training changes the parameters."""
    import json

    import torch

    import training.rollout as ro
    from tests.helpers import run_tiny_grpo, tiny_qwen2
    from training.config import ScriptArguments

    tok = byte_bpe_tokenizer()
    ckpt = tmp_path / "tiny"
    tiny_qwen2(len(tok), max_positions=4096).save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    (ckpt / "thinkgate.json").write_text(json.dumps({"answer_prefix": "Answer:"}))

    def gen(model, t, batch, max_new, trainer, stops):
        return [t.encode("1\n</think>" if "</think>" in stops else " 1", add_special_tokens=False)[:max_new]
                + [t.eos_token_id] for _ in batch]

    monkeypatch.setattr(ro, "_hf_sample", gen)
    seen: list = []
    script = ScriptArguments(task="mix", num_examples=1, eval_examples=0,
                             reward_funcs=["correct", "no_think_bonus", "correct_think_length", "test_spy"])
    # the spy's alternating reward gives the group an advantage: the tiny model's "1" is wrong on every
    # item, and correct_think_length (paid by right answers only) then gives no signal of its own
    before, after = run_tiny_grpo(tmp_path, ckpt, script, lambda completions, item=None: (
        seen.append((completions, item)), [float(i % 2) for i in range(len(completions))])[1],
        max_completion_length=32)
    comps = [c for s in seen for c in s[0]]
    assert any(c.startswith("<think>\n1\n</think>\nAnswer: 1") for c in comps)
    assert any(c.startswith("Answer: 1") for c in comps)
    sets = {json.loads(i)["meta"]["set"] for s in seen for i in s[1]}
    assert sets <= {"gsm", "multidigit", "onestep"} and sets
    recs = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/correct_think_length/mean" in r for r in recs)
    assert any(not torch.equal(before[k], v) for k, v in after.items())
