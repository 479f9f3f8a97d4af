"""``python -m training.sft`` (also ``thinkgate train --stage sft``): the dual-mode warm-up.

A thin script over TRL's `SFTTrainer` (completion-only loss on prompt-completion rows; LoRA
through TRL's `ModelConfig` flags). Our part is the data (`training.dual`): every training
item appears with a think target and a no-think target, so afterwards the first generated
token (``<`` of ``<think>``, or the answer) is the mode decision and p(``<think>``) a signal.

Output dir: a checkpoint (LoRA merged) that ``thinkgate serve --model DIR`` and
``python -m training.grpo --model_name_or_path DIR`` load, ``thinkgate.json`` (agent
defaults until calibrated), ``summary.json`` and ``metrics.jsonl``.
Go/no-go (`python -m agent.eval --models DIR`): forced-think must beat forced-no-think on
the hard bucket by ≥ 20 points.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from training.script import main_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class SFTScriptArguments:
    """Data of the warm-up."""

    items_per_bucket: int = field(default=800, metadata={"help": "training items per difficulty bucket (each gives 2 rows)"})
    seed_data: int = field(default=1, metadata={"help": "generator seed of the training split (dev=2, test=3 are held out)"})
    merge_lora: bool = field(default=True, metadata={"help": "merge LoRA adapters into the saved checkpoint"})

    def __post_init__(self) -> None:
        if self.items_per_bucket < 1:
            raise ValueError(f"items_per_bucket must be >= 1, got {self.items_per_bucket}")
        if self.seed_data in (2, 3):
            raise ValueError(f"seed_data must not be a held-out seed (2 = dev, 3 = test), got {self.seed_data}")


def run(script: SFTScriptArguments, cfg, model_args) -> Path:
    """Train and save; returns the output dir."""
    from datasets import Dataset
    from trl import SFTTrainer, get_peft_config

    from training.dual import dual_mode_rows, train_items
    from training.script import load_model, prepare, resume_point, save_trained
    from training.report import MetricsCallback

    out, model_path, tokenizer = prepare(cfg, model_args)
    rows = dual_mode_rows(train_items(script.items_per_bucket, script.seed_data), tokenizer)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    model = load_model(model_path, cfg)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=tokenizer,
                         peft_config=get_peft_config(model_args), callbacks=[MetricsCallback(out / "metrics.jsonl")])
    trainer.train(resume_from_checkpoint=resume_point(cfg))
    save_trained(trainer, tokenizer, out, model_path, script.merge_lora)
    if trainer.accelerator.is_main_process:
        summary = {"stage": "sft", "model": model_args.model_name_or_path, "rows": len(rows),
                   "items_per_bucket": script.items_per_bucket, "steps": trainer.state.global_step,
                   "train_loss": trainer.state.log_history[-1].get("train_loss")}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps({"output_dir": str(out), **summary}))
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse flags / a YAML recipe and run; bad arguments exit 2 with a one-line message."""
    from trl import ModelConfig, SFTConfig

    main_for((SFTScriptArguments, SFTConfig, ModelConfig), run, argv)


if __name__ == "__main__":
    main()
