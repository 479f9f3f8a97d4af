"""A 2-step GRPO run on a tiny random model: parameters change, the checkpoint loads and serves."""
import json
import random

import pytest
import torch

pytest.importorskip("trl")


@pytest.fixture
def tiny_ckpt(tmp_path):
    from tests.helpers import byte_bpe_tokenizer, tiny_llama

    tok = byte_bpe_tokenizer()
    model = tiny_llama(len(tok))
    d = tmp_path / "tiny"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_ntr_cli_writes_an_eval_file_and_rejects_a_missing_corpus(tmp_path, tiny_ckpt, capsys):
    from training.ntr import main, read_jsonl

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"d{i}.txt").write_text(f"document {i}: the answer is 42. python lists and search. " * 8)
    out = tmp_path / "ntr.jsonl"
    main(["--model", str(tiny_ckpt), "--corpus", str(corpus), "--out", str(out), "--n", "12", "--window", "48",
          "--context-tokens", "16", "--entropy-threshold", "0.5", "--easy-share", "0.5"])
    rows = read_jsonl(out)
    assert len(rows) == 12 and all(r["boundaries"] and (r["entropy"] >= 0.5) == r["hard"] for r in rows)
    assert "wrote 12 rows" in capsys.readouterr().out
    fresh = "a fresh page about dictionaries and sets, nothing else. " * 8
    (corpus / "new.txt").write_text(fresh)
    held_out = tmp_path / "train.jsonl"  # every document but the new one is excluded
    main(["--model", str(tiny_ckpt), "--corpus", str(corpus), "--out", str(held_out), "--n", "4", "--window", "48",
          "--context-tokens", "16", "--entropy-threshold", "0.5", "--exclude", str(out)])
    rows = read_jsonl(held_out)
    assert rows and all(r["context"].strip() in fresh for r in rows)
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(tiny_ckpt), "--corpus", str(tmp_path / "missing"), "--out", str(tmp_path / "x.jsonl")])
    assert exc.value.code == 2 and "no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_gain_scorer_matches_information_gain_and_caches_the_baseline(tiny_ckpt):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.ntr import GainScorer, information_gain

    tok = AutoTokenizer.from_pretrained(tiny_ckpt)
    lm = AutoModelForCausalLM.from_pretrained(tiny_ckpt)
    scorer = GainScorer(lm, tok)
    prompt = "The cat sat on the"
    ids = tok.encode(prompt, add_special_tokens=False)
    for thought in ("a rug or a mat", "no idea"):
        assert scorer(prompt, thought, " mat") == pytest.approx(information_gain(lm, tok, ids, thought, " mat"), abs=1e-4)
    assert len(scorer._baseline) == 1
    with pytest.raises(ValueError, match="target is empty"):
        scorer(prompt, "x", "")


def test_two_step_grpo_changes_parameters_and_saves_loadable_checkpoint(tmp_path, tiny_ckpt):
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, ModelConfig

    from training.config import ScriptArguments
    from training.grpo import run
    from training.rewards import REWARDS

    rng = random.Random(0)
    REWARDS["test_noise"] = lambda completions, **kw: [rng.random() for _ in completions]  # non-zero advantages
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"d{i}.txt").write_text("hello world, the answer is 42. python lists and search. " * 8)
    out = tmp_path / "out"
    script = ScriptArguments(task="ntr", corpus=[str(corpus)], num_examples=8, eval_examples=2, window=48,
                             context_tokens=16, entropy_threshold=0.5,
                             reward_funcs=["prefix_match", "think_length", "no_think_bonus", "soft_overlong",
                                           "format", "information_gain", "test_noise"])
    cfg = GRPOConfig(output_dir=str(out), use_cpu=True, bf16=False, max_steps=2, per_device_train_batch_size=4,
                     num_generations=2, max_completion_length=8, learning_rate=1e-2, beta=0.0, logging_steps=1,
                     save_strategy="no", report_to="none", seed=0)
    before = AutoModelForCausalLM.from_pretrained(tiny_ckpt).state_dict()
    try:
        run(script, cfg, ModelConfig(model_name_or_path=str(tiny_ckpt)))
    finally:
        REWARDS.pop("test_noise")
    after = AutoModelForCausalLM.from_pretrained(out)
    changed = sum(not torch.equal(before[k], v) for k, v in after.state_dict().items())
    assert changed > 0
    assert (out / "tokenizer.json").exists() and (out / "thinkgate.json").exists()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if "reward" in r]
    assert len(train_recs) == 2
    assert "rewards/prefix_match/mean" in train_recs[0] and "frac_reward_zero_std" in train_recs[0]
    assert "thinkgate/think_rate" in train_recs[0]
    assert "rewards/information_gain/mean" in train_recs[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["held_out_after"]["examples"] == 2
    rows = [json.loads(line) for line in (out / "ntr_dataset.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all("entropy" in r and r["boundaries"] for r in rows)
    assert (out / "curves.png").stat().st_size > 1000
    # the agent's backend loads it unchanged
    from policy.transformers_backend import TransformersPolicy

    p = TransformersPolicy(str(out), device="cpu")
    assert p.chat_prompt([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("mode_token_weight", [0.0, 1.0])
def test_arith_grpo_forces_half_of_each_group_to_think(tmp_path, tiny_ckpt, mode_token_weight):
    """The arith task with forced-mode rollouts: every group of 4 holds 2 think and 2 no-think
    completions, the rewards see them, and training changes the parameters (also with the
    decoupled mode-token loss)."""
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, ModelConfig

    from training.config import ScriptArguments
    from training.grpo import run
    from training.rewards import REWARDS

    seen: list = []

    def spy(completions, completion_ids=None, forced_mode=None, **_):
        if forced_mode is not None:  # None: the held-out evaluation, which does not force modes
            seen.append((list(forced_mode), [ids[0] for ids in completion_ids]))
        return [float(i % 3) for i in range(len(completions))]

    REWARDS["test_spy"] = spy
    script = ScriptArguments(task="arith", num_examples=4, eval_examples=2, mode_token_weight=mode_token_weight,
                             reward_funcs=["correct", "no_think_bonus", "test_spy"])
    cfg = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, max_steps=2,
                     per_device_train_batch_size=8, num_generations=4, max_completion_length=6, learning_rate=1e-2,
                     beta=0.0, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                     loss_type="grpo")
    before = AutoModelForCausalLM.from_pretrained(tiny_ckpt).state_dict()
    try:
        run(script, cfg, ModelConfig(model_name_or_path=str(tiny_ckpt)))
    finally:
        REWARDS.pop("test_spy")
    assert seen
    from transformers import AutoTokenizer

    think_id = AutoTokenizer.from_pretrained(tiny_ckpt).encode("<think>", add_special_tokens=False)[0]
    for modes, first in seen:
        assert modes == ["think", "think", "no_think", "no_think"] * (len(modes) // 4)
        assert [t == think_id for t in first] == [m == "think" for m in modes]  # the forced first token
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    assert any(not torch.equal(before[k], v) for k, v in after.items())


def test_cli_rejects_bad_arguments(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "training.grpo", "--task", "nope", "--output_dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "task must be 'ntr', 'arith', 'hops' or 'mix', got 'nope'" in r.stderr


@pytest.mark.parametrize("loss", [{"row_mean_loss": True}, {"mode_token_weight": 1.0}, {"pair_modes": True}])
def test_dual_mode_sft_on_a_tiny_model_trains_both_targets(tmp_path, tiny_ckpt, loss):
    """The warm-up: each item gives a think and a no-think row on the served prompt; 2 SFT steps change
    the parameters and save a checkpoint the backend loads, with thinkgate.json and summary.json."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import ModelConfig, SFTConfig

    from training.dual import dual_mode_rows, train_items
    from training.sft import SFTScriptArguments, run

    items = train_items(3)
    rows = dual_mode_rows(items, AutoTokenizer.from_pretrained(tiny_ckpt))
    assert len(rows) == 12 and [r["mode"] for r in rows[:2]] == ["think", "no_think"]
    assert rows[0]["prompt"] == rows[1]["prompt"] and rows[0]["completion"].startswith("<think>\n")
    assert sum(r["hard"] for r in rows) == 6  # mode independent of difficulty: both modes in both buckets
    out = tmp_path / "sft"
    cfg = SFTConfig(output_dir=str(out), use_cpu=True, bf16=False, max_steps=2, per_device_train_batch_size=4,
                    learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none", max_length=256)
    before = AutoModelForCausalLM.from_pretrained(tiny_ckpt).state_dict()
    run(SFTScriptArguments(items_per_bucket=3, **loss), cfg, ModelConfig(model_name_or_path=str(tiny_ckpt)))
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any(not torch.equal(before[k], v) for k, v in after.items())
    assert json.loads((out / "summary.json").read_text())["rows"] == 12 and (out / "thinkgate.json").exists()
    with pytest.raises(ValueError, match="held-out seed"):
        SFTScriptArguments(seed_data=3)


def test_paired_sampler_keeps_both_rows_of_an_item_in_one_batch():
    """Every batch of 8 holds whole (think, no-think) pairs, every row comes once per epoch, batches are
    grouped by length (longest first in each mega-batch), epochs shuffle differently, a seed repeats."""
    from training.sft import PairedLengthSampler

    import random as _random
    rng = _random.Random(0)
    lengths = []
    for _ in range(200):
        n = rng.choice([60, 140])  # a short and a long item; its no-think row is always short
        lengths += [n + rng.randint(0, 20), 55]
    s = PairedLengthSampler(lengths, batch_size=8, seed=3, mega=5)
    order = list(s)
    assert sorted(order) == list(range(400)) and len(s) == 400
    for b in range(0, 400, 8):
        batch = order[b: b + 8]
        assert sorted(batch) == sorted({2 * (i // 2) for i in batch} | {2 * (i // 2) + 1 for i in batch})
    first_mega = [lengths[i] for i in order[:40:2]]
    assert first_mega == sorted(first_mega, reverse=True)
    assert list(PairedLengthSampler(lengths, batch_size=8, seed=3, mega=5)) == order
    s.set_epoch(1)
    assert list(s) != order
    with pytest.raises(ValueError, match="even batch size"):
        PairedLengthSampler(lengths, batch_size=5)
    with pytest.raises(ValueError, match="even number of rows, got 3"):
        PairedLengthSampler([1, 2, 3], batch_size=4)


def test_row_mean_loss_weighs_a_short_answer_like_a_long_trace():
    """Two rows, NLLs (a, a) and (b,): the row mean is (a + b) / 2, the token mean (2a + b) / 3; rows
    without labels (all -100) are left out instead of counted as 0."""
    import torch.nn.functional as F

    from training.sft import row_mean_nll

    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5)
    labels = torch.tensor([[-100, 1, 2, -100], [-100, -100, 3, -100], [-100, -100, -100, -100]])
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:].clamp(min=0), reduction="none")
    a = (nll[0, 0] + nll[0, 1]) / 2
    b = nll[1, 1]
    got = row_mean_nll(logits, labels)
    assert torch.allclose(got, (a + b) / 2)
    assert not torch.allclose(got, (nll[0, 0] + nll[0, 1] + b) / 3)
    assert row_mean_nll(logits, torch.full_like(labels, -100)).item() == 0.0


def test_decision_weighted_sft_loss_adds_the_first_tokens_mean():
    """Rows with NLLs (a0, a1) and (b,): token mean (a0 + a1 + b) / 3, plus λ (a0 + b) / 2 — each
    row's first labelled token (its mode decision) counts once whatever the row's length."""
    import torch.nn.functional as F

    from training.sft import SFTScriptArguments, decision_weighted_nll

    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5)
    labels = torch.tensor([[-100, 1, 2, -100], [-100, -100, 3, -100], [-100, -100, -100, -100]])
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:].clamp(min=0), reduction="none")
    token_mean = (nll[0, 0] + nll[0, 1] + nll[1, 1]) / 3
    assert torch.allclose(decision_weighted_nll(logits, labels, 0.0), token_mean)
    assert torch.allclose(decision_weighted_nll(logits, labels, 2.0), token_mean + 2.0 * (nll[0, 0] + nll[1, 1]) / 2)
    assert decision_weighted_nll(logits, torch.full_like(labels, -100), 1.0).item() == 0.0
    with pytest.raises(ValueError, match="mode_token_weight must be >= 0, got -1"):
        SFTScriptArguments(mode_token_weight=-1.0)
    with pytest.raises(ValueError, match="cannot be combined with row_mean_loss"):
        SFTScriptArguments(mode_token_weight=1.0, row_mean_loss=True)


def test_decoupled_loss_gives_the_mode_token_a_length_free_share(tiny_ckpt):
    """DeGRPO weights: under TRL's per-sequence mean the first token's gradient share is α/(1+α)
    for a 2-token and a 7-token completion alike (plain GRPO: 1/2 and 1/7)."""
    from transformers import AutoModelForCausalLM

    from training.decoupled import decoupled_trainer_class, mode_token_weights

    mask = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    for alpha in (0.5, 1.0, 3.0):
        w = mode_token_weights(mask, alpha)
        assert torch.allclose(w[:, 0] / w.sum(-1), torch.full((2,), alpha / (1 + alpha)))
        assert torch.equal(w[:, 1:], mask[:, 1:].float())
    assert torch.equal(mode_token_weights(mask, 0.0), mask.float())
    with pytest.raises(ValueError, match="mode_token_weight must be >= 0, got -1"):
        mode_token_weights(mask, -1.0)

    # the subclass hands TRL's loss exactly these weights as its token mask
    cls = decoupled_trainer_class(1.0)
    seen = {}

    def fake_super_loss(self, model, inputs):
        seen["mask"] = inputs["tool_mask"]
        return torch.tensor(0.0)

    base = cls.__mro__[1]
    trainer = cls.__new__(cls)  # no __init__: only loss_type is read before the (faked) TRL loss
    orig, base._compute_loss = base._compute_loss, fake_super_loss
    try:
        trainer.loss_type = "grpo"
        trainer._compute_loss(AutoModelForCausalLM.from_pretrained(tiny_ckpt), {"completion_mask": mask})
        trainer.loss_type = "dapo"
        with pytest.raises(ValueError, match="needs loss_type 'grpo'.*got 'dapo'"):
            trainer._compute_loss(None, {"completion_mask": mask})
    finally:
        base._compute_loss = orig
    assert torch.equal(seen["mask"], mode_token_weights(mask, 1.0))


def test_mode_token_weight_is_validated():
    from training.config import ScriptArguments

    with pytest.raises(ValueError, match="mode_token_weight must be >= 0, got -0.5"):
        ScriptArguments(task="arith", mode_token_weight=-0.5)
    with pytest.raises(ValueError, match="mask_forced drops"):
        ScriptArguments(task="arith", mode_token_weight=1.0, mask_forced=True)
