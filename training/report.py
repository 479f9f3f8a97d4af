"""What a training run reports: per-step metrics (JSONL), held-out scores, a curve (PNG).

Contract:
- `stats_reward` is a zero-weight pseudo-reward that logs, per generation batch, the
  think-rate (overall, on hard and on easy rows), mean thinking tokens and accuracy through
  TRL's ``log_metric``; TRL itself logs each reward's mean and ``frac_reward_zero_std`` (the
  share of groups whose rewards are all equal, which teach nothing).
- `MetricsCallback` appends every TRL log record to ``metrics.jsonl``.
- `evaluate_held_out` generates greedily for held-out prompts and scores them the same way.
- `plot_curves` draws reward, think-rate and thinking tokens against the step.
"""
from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from training.rewards import call_named, completion_text, correctness, think_token_count, thinks


def batch_stats(completions, completion_ids=None, hard=None, continuation=None, boundaries=None,
                item=None) -> dict[str, float]:
    """Think-rate (all/hard/easy), mean thinking tokens and accuracy of a batch of completions."""
    texts = [completion_text(c) for c in completions]
    think = [thinks(t) for t in texts]
    n_ids = [len(i) for i in completion_ids] if completion_ids is not None else [None] * len(texts)
    tt = [think_token_count(t, n) for t, n in zip(texts, n_ids)]
    ok = [x or 0.0 for x in correctness(completions, continuation=continuation, boundaries=boundaries, item=item)]
    out = {"think_rate": sum(think) / len(think), "think_tokens": sum(tt) / len(tt), "accuracy": sum(ok) / len(ok)}
    if hard is not None:
        for flag, name in ((True, "hard"), (False, "easy")):
            sel = [th for th, h in zip(think, hard) if bool(h) == flag]
            if sel:
                out[f"think_rate_{name}"] = sum(sel) / len(sel)
    return out


def stats_reward(completions, log_metric=None, **columns) -> list[float]:
    """Zero-weight pseudo-reward: logs `batch_stats` of the batch (the TRL columns it names) via
    TRL's ``log_metric``; returns zeros."""
    if log_metric is not None:
        for k, v in call_named(batch_stats, completions, columns).items():
            log_metric(f"thinkgate/{k}", v)
    return [0.0] * len(completions)


stats_reward.__name__ = "stats"


class MetricsCallback(TrainerCallback):
    """Append each log record (step, epoch and every metric) to `path` as one JSON line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def evaluate_held_out(model, tokenizer, rows, reward_funcs, weights, max_new_tokens: int,
                      batch_size: int = 8) -> dict[str, float]:
    """Greedy completions for held-out `rows`; mean weighted reward plus `batch_stats`."""
    import torch

    if not rows:
        return {}
    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    completions, comp_ids = [], []
    for i in range(0, len(rows), batch_size):
        batch = rows[i: i + batch_size]
        texts = [r["prompt"] if isinstance(r["prompt"], str) else
                 tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in batch]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1]:]:
            ids = [t for t in row.tolist() if t != tokenizer.pad_token_id]
            comp_ids.append(ids)
            completions.append([{"role": "assistant", "content": tokenizer.decode(ids, skip_special_tokens=True)}])
    cols = {"completion_ids": comp_ids, **{k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}}
    total = [0.0] * len(rows)
    for f, w in zip(reward_funcs, weights):
        vals = f(completions, **cols)
        total = [t + w * (v or 0.0) for t, v in zip(total, vals)]
    res = {"reward": sum(total) / len(total), **call_named(batch_stats, completions, cols)}
    res["examples"] = len(rows)
    return res


def plot_curves(metrics_jsonl: Path, out_png: Path) -> Path | None:
    """Training curves from `metrics_jsonl` to `out_png`; None when there are no training records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    recs = [r for r in recs if "reward" in r]
    if not recs:
        return None
    steps = [r["step"] for r in recs]
    panels = [("reward", ["reward"]), ("think-rate", ["thinkgate/think_rate", "thinkgate/think_rate_hard",
                                                      "thinkgate/think_rate_easy"]),
              ("thinking tokens", ["thinkgate/think_tokens"]), ("accuracy", ["thinkgate/accuracy"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (title, keys) in zip(axes, panels):
        for k in keys:
            ys = [r.get(k) for r in recs]
            pts = [(s, y) for s, y in zip(steps, ys) if y is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=k.split("/")[-1])
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
