"""``python -m training.decision``: learn when to think from the policy's own paired rollouts.

The mode decision is the first token of the assistant turn: the think token (the first token of
``<think>``, `policy.modes.think_sequences`) or anything else (answer at once). Each training item was
answered by the served policy in both modes (``python -m evals.quality run --split train``: the
same greedy branches the agent serves), so both arms of this one-step decision are observed — a
full-information contextual bandit, which reduces to cost-sensitive classification (Beygelzimer &
Langford, "The offset tree", 2009, §2). The reward of a mode is AdaptThink's (arXiv 2505.13417,
Eq. 4: correctness plus a bonus δ for not thinking) with a token cost c per 100 generated tokens:

    r(think) = score_think − c · tokens_think / 100
    r(answer) = score_direct + δ − c · tokens_direct / 100
    A = r(think) − r(answer)

and the loss is the |A|-weighted binary cross-entropy of p(think token | prompt) toward 1[A > 0]:
its minimiser thinks exactly where thinking is worth more than it costs, as AdaptThink's
objective does once the answers of each branch are held fixed. Unlike the expected-reward gradient
(A · ∇p), it does not vanish at the base model's p(think) ≈ 0, the failure seen with GRPO at 135M
(training.decoupled). Only the decision token is trained: LoRA (PEFT) on the top
``layers`` decoder layers, so the lower layers — and most of what the answers are made of — stay the
base's; the evaluation measures what moved (``python -m evals.quality learned``).

Contract:
- `mode_advantage(row, delta, cost_per_100)`: A of one rollout row (an `evals.forced.ForcedRecord` dict).
- `decision_examples(rows, tokenizer)`: (prompt ids, label, weight) per row with A ≠ 0, on the
  served prompt (`tasks.render_prompt`; rows name their set in ``meta.set`` and their split seed in the id).
- `decision_loss(logits, think_id, labels, weights)`: the weighted BCE above, from [B, V] logits.
- `train(cfg)`: after each epoch, with ``dev_rows``, the decisions on the dev rollouts are scored by
  the reward of the mode they pick; the best epoch is kept (epoch 0 = the base model, so training
  that does not help on dev keeps the base's decision). Writes ``<output_dir>/adapter`` (PEFT, fp16
  safetensors), the merged checkpoint,
  ``thinkgate.json`` (``decision: learned``) and ``summary.json`` (steps, losses, train decisions,
  wall time). A finished run is not repeated; an interrupted one restarts (minutes on 2 cores).
"""
from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class DecisionConfig:
    """Arguments of ``python -m training.decision`` (validated on construction)."""

    rows: list[str] = field(default_factory=list, metadata={
        "help": "rollout files (evals.quality run --split train: train-<set>.jsonl), both modes per item"})
    dev_rows: list[str] = field(default_factory=list, metadata={
        "help": "dev rollout files (dev-<set>.jsonl, split seed 2): after each epoch the decisions are scored "
                "on them (mean reward of the chosen mode) and the best epoch is kept (early stopping)"})
    model_name_or_path: str = field(default="qwen2.5-coder-0.5b-instruct", metadata={"help": "the policy the rows came from"})
    output_dir: str = field(default="runs/decision-qwen", metadata={"help": "where the adapter and merged model go"})
    delta: float = field(default=0.05, metadata={"help": "δ: bonus of answering at once (AdaptThink Eq. 4), accuracy points / 100"})
    cost_per_100: float = field(default=0.02, metadata={"help": "c: accuracy traded per 100 generated tokens"})
    layers: int = field(default=8, metadata={"help": "LoRA on the top this many decoder layers (the rest stays frozen)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale alpha / r)"})
    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate"})
    epochs: int = field(default=3, metadata={"help": "passes over the rows"})
    batch_size: int = field(default=8, metadata={"help": "prompts per optimizer step"})
    seed: int = field(default=0, metadata={"help": "shuffling and LoRA initialisation seed"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("rows: give at least one rollout file (python -m evals.quality run --split train)")
        for f in self.rows:
            if not Path(f).is_file():
                raise FileNotFoundError(f"rows: no such rollout file {f}")
            if not Path(f).name.startswith("train-"):
                raise ValueError(f"rows must be training rollouts (train-<set>.jsonl, split seed 1), got {f}")
        for f in self.dev_rows:
            if not Path(f).is_file() or not Path(f).name.startswith("dev-"):
                raise ValueError(f"dev_rows must be existing dev rollouts (dev-<set>.jsonl, split seed 2), got {f}")
        for name in ("layers", "lora_r", "lora_alpha", "epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.delta < 0 or self.cost_per_100 < 0:
            raise ValueError(f"delta and cost_per_100 must be >= 0, got {self.delta} and {self.cost_per_100}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


def mode_advantage(row: dict, delta: float, cost_per_100: float) -> float:
    """A = r(think) − r(answer) of one paired rollout row (module docstring; accuracy units).

    >>> mode_advantage({"think_score": 1.0, "direct_score": 0.0, "think_tokens": 200, "direct_tokens": 10}, 0.05, 0.02)
    0.912
    >>> mode_advantage({"think_score": 1.0, "direct_score": 1.0, "think_tokens": 60, "direct_tokens": 5}, 0.05, 0.02)
    -0.061
    """
    a = (row["think_score"] - row["direct_score"] - delta
         - cost_per_100 * (row["think_tokens"] - row["direct_tokens"]) / 100)
    return round(a, 6)


_SEED = re.compile(r"-s(\d+)-\d+$")


def _items_for(rows: list[dict]) -> dict:
    """id → `tasks.Item` of every row, rebuilt from its set name and split seed (raises LookupError for one
    that cannot be rebuilt: a prompt must be the one the rollout saw)."""
    from tasks import load_items

    need: dict[tuple[str, int], int] = {}
    for r in rows:
        m = _SEED.search(r["id"])
        if not m or "set" not in r.get("meta", {}):
            raise LookupError(f"row {r['id']!r} names no set and split seed: not an evals.quality rollout")
        key = (r["meta"]["set"], int(m.group(1)))
        need[key] = max(need.get(key, 0), int(r["id"].rsplit("-", 1)[1]) + 1)
    items = {}
    for (name, seed), n in need.items():
        items.update({it.id: it for it in load_items(name, n, seed)})
    missing = [r["id"] for r in rows if r["id"] not in items]
    if missing:
        raise LookupError(f"{len(missing)} rows have no item any more (first {missing[0]!r})")
    return items


def decision_examples(rows: list[dict], tokenizer, delta: float = 0.05, cost_per_100: float = 0.02) -> list[dict]:
    """Training examples of the decision: {id, set, prompt (ids), label (1 = think), weight = |A|, advantage};
    rows with A = 0 carry no signal and are dropped. Prompts are the served ones without passages
    (these sets are served without retrieval; `tasks.render_prompt`)."""
    from tasks import prompt_ids

    items = _items_for(rows)
    out = []
    for r in rows:
        a = mode_advantage(r, delta, cost_per_100)
        if a == 0:
            continue
        ids = prompt_ids(tokenizer, items[r["id"]])
        out.append({"id": r["id"], "set": r["meta"]["set"], "prompt": ids, "label": int(a > 0), "weight": abs(a),
                    "advantage": a})
    return out


def decision_loss(logits, think_id: int, labels, weights):
    """Weighted binary cross-entropy of the mode decision.

    Args:
        logits: [B, V] next-token logits at the start of the assistant turn.
        think_id: the think token's id.
        labels: [B] 1 (think) or 0 (answer at once).
        weights: [B] |A| ≥ 0.
    Returns:
        (scalar loss = Σ w·BCE / Σ w, [B] p(think)).

    >>> import torch
    >>> lg = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    >>> loss, p = decision_loss(lg, 1, torch.tensor([1, 0]), torch.tensor([1.0, 3.0]))
    >>> round(float(loss), 4), p.tolist()
    (0.6931, [0.5, 0.5])
    """
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    log_think = logp[:, think_id]
    others = torch.cat([logp[:, :think_id], logp[:, think_id + 1:]], dim=-1)
    log_not = torch.logsumexp(others, dim=-1)
    nll = -(labels.float() * log_think + (1 - labels.float()) * log_not)
    w = weights.float()
    return (w * nll).sum() / w.sum().clamp(min=1e-8), log_think.exp()


def chosen_reward(row: dict, think: bool, delta: float, cost_per_100: float) -> float:
    """r(mode) of the module docstring for the mode `think` picks, from a paired rollout row.

    >>> chosen_reward({"think_score": 1.0, "direct_score": 0.0, "think_tokens": 200, "direct_tokens": 10}, True, 0.05, 0.02)
    0.96
    """
    if think:
        return round(row["think_score"] - cost_per_100 * row["think_tokens"] / 100, 6)
    return round(row["direct_score"] + delta - cost_per_100 * row["direct_tokens"] / 100, 6)


def p_think(model, tokenizer, prompts: list[list[int]], think_id: int, batch_size: int = 16) -> list[float]:
    """p(think token) at the start of the assistant turn for each prompt (no gradient)."""
    import torch

    from policy.modes import left_pad

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            ids, att = left_pad(prompts[i:i + batch_size], pad)
            logits = model(input_ids=ids, attention_mask=att, logits_to_keep=1).logits[:, -1]
            out += torch.softmax(logits.float(), -1)[:, think_id].tolist()
    return out


def save_adapter_fp16(model, dest: Path) -> Path:
    """Save a PEFT model's adapter into `dest` (``adapter_config.json`` + ``adapter_model.safetensors``)
    with its tensors in fp16 — the one weights file the repo may hold (README "Models") — leaving the
    model itself in its dtype. Returns the safetensors path."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(dest)
    f = Path(dest) / "adapter_model.safetensors"
    save_file({k: v.half().contiguous() for k, v in load_file(str(f)).items()}, str(f), metadata={"format": "pt"})
    return f


def train(cfg: DecisionConfig, log=print) -> Path:
    """Train the decision (module docstring) and save it; returns the output dir."""
    import random

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policy.models import resolve_policy
    from policy.modes import left_pad, think_sequences
    from training.script import write_calibration_defaults

    out = Path(cfg.output_dir)
    if (out / "summary.json").is_file():
        log(f"{out} already holds a finished run (summary.json): nothing to do")
        return out
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rows = [json.loads(ln) for f in cfg.rows for ln in Path(f).read_text().splitlines() if ln.strip()]
    path = resolve_policy(cfg.model_name_or_path)
    tok = AutoTokenizer.from_pretrained(path)
    think_id = think_sequences(tok)[0][0]
    examples = decision_examples(rows, tok, cfg.delta, cfg.cost_per_100)
    if not examples:
        raise ValueError("no row carries a decision signal (A = 0 everywhere)")
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    n_layers = base.config.num_hidden_layers
    layers = list(range(max(0, n_layers - cfg.layers), n_layers))
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      layers_to_transform=layers)
    model = get_peft_model(base, lora)
    prompts = [e["prompt"] for e in examples]
    model.eval()
    before = p_think(model, tok, prompts, think_id, cfg.batch_size * 2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rng = random.Random(cfg.seed)
    order = list(range(len(examples)))
    dev_rows = [json.loads(ln) for f in cfg.dev_rows for ln in Path(f).read_text().splitlines() if ln.strip()]
    dev_items = _items_for(dev_rows) if dev_rows else {}
    from tasks import prompt_ids

    dev_prompts = [prompt_ids(tok, dev_items[r["id"]]) for r in dev_rows]

    def dev_score() -> dict | None:
        if not dev_rows:
            return None
        model.eval()
        ps = p_think(model, tok, dev_prompts, think_id, cfg.batch_size * 2)
        rewards = [chosen_reward(r, p > 0.5, cfg.delta, cfg.cost_per_100) for r, p in zip(dev_rows, ps)]
        by_set = {}
        for r, p in zip(dev_rows, ps):
            by_set.setdefault(r["meta"]["set"], []).append(p > 0.5)
        return {"reward": sum(rewards) / len(rewards),
                "accuracy": sum(r["think_score"] if p > 0.5 else r["direct_score"] for r, p in zip(dev_rows, ps)) / len(ps),
                "think_rate": {k: sum(v) / len(v) for k, v in by_set.items()}}

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    t0, history = time.time(), []
    best = {"epoch": 0, "dev": dev_score(), "state": {n: p.detach().clone() for n, p in trainable.items()}}
    if best["dev"]:
        log(json.dumps({"epoch": 0, "dev": best["dev"]}))
    for epoch in range(cfg.epochs):
        rng.shuffle(order)
        model.train()
        total, weight = 0.0, 0.0
        for s in range(0, len(order), cfg.batch_size):
            batch = [examples[i] for i in order[s:s + cfg.batch_size]]
            ids, att = left_pad([e["prompt"] for e in batch], pad)
            logits = model(input_ids=ids, attention_mask=att, logits_to_keep=1).logits[:, -1]
            w = torch.tensor([e["weight"] for e in batch])
            loss, _ = decision_loss(logits, think_id, torch.tensor([e["label"] for e in batch]), w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * float(w.sum())
            weight += float(w.sum())
        dev = dev_score()
        history.append({"epoch": epoch + 1, "loss": total / weight, "seconds": round(time.time() - t0, 1), "dev": dev})
        log(json.dumps(history[-1]))
        if dev is None or dev["reward"] > best["dev"]["reward"]:
            best = {"epoch": epoch + 1, "dev": dev, "state": {n: p.detach().clone() for n, p in trainable.items()}}
    with torch.no_grad():  # the best epoch on dev (the last one without dev rows)
        for n, p in trainable.items():
            p.copy_(best["state"][n])
    model.eval()
    after = p_think(model, tok, prompts, think_id, cfg.batch_size * 2)
    out.mkdir(parents=True, exist_ok=True)
    save_adapter_fp16(model, out / "adapter")
    merged = model.merge_and_unload()
    merged.save_pretrained(out)
    tok.save_pretrained(out)
    write_calibration_defaults(path, out)
    cal = json.loads((out / "thinkgate.json").read_text())
    cal.pop("calibrated", None)
    cal["decision"] = "learned"
    (out / "thinkgate.json").write_text(json.dumps(cal, indent=2))
    per_set = {}
    for e, b, a in zip(examples, before, after):
        d = per_set.setdefault(e["set"], {"n": 0, "label_think": 0, "think_before": 0, "think_after": 0, "agree_after": 0})
        d["n"] += 1
        d["label_think"] += e["label"]
        d["think_before"] += b > 0.5
        d["think_after"] += a > 0.5
        d["agree_after"] += (a > 0.5) == bool(e["label"])
    summary = {"stage": "decision", "config": asdict(cfg), "examples": len(examples), "rows": len(rows),
               "think_id": think_id, "history": history, "best_epoch": best["epoch"], "best_dev": best["dev"], "train_seconds": round(time.time() - t0, 1),
               "per_set": per_set}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(json.dumps({"output_dir": str(out), "per_set": per_set, "train_seconds": summary["train_seconds"]}))
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI entry (flags or a YAML recipe as the only argument); bad input exits 2 with a one-line message."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(DecisionConfig)
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
            (cfg,) = parser.parse_yaml_file(argv[0])
        else:
            (cfg,) = parser.parse_args_into_dataclasses(argv)
        train(cfg)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
