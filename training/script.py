"""What `training.sft` and `training.grpo` share: flag/recipe parsing, resuming, saving the result.

Contract:
- `main_for(types, run, argv)`: TRL's `TrlParser` over (our script arguments, TRL's config,
  `ModelConfig`), a default policy name, and a one-line ``error: …`` with exit 2 for bad input.
- `prepare(cfg, model_args)` / `load_model(path, cfg)`: output dir, model path, tokenizer, model.
- `resume_point(cfg)`: ``--resume_from_checkpoint`` or the newest ``checkpoint-*`` in the output dir.
- `save_trained(...)`: LoRA merged (unless told not to), weights + tokenizer + ``thinkgate.json``.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

CALIBRATION_FILE = "thinkgate.json"  # read by agent.config.AgentConfig.for_model (training does not import agent)
DEFAULT_MODEL = "smollm2-135m-instruct"


def main_for(types: tuple, run, argv: list[str] | None = None) -> None:
    """Parse flags / a YAML recipe into `types` and call ``run(*parsed)``; bad arguments exit 2."""
    from trl import TrlParser

    parser = TrlParser(types)
    try:
        parsed = parser.parse_args_and_config(argv)
        model_args = parsed[-1]
        if model_args.model_name_or_path is None:
            model_args.model_name_or_path = DEFAULT_MODEL
        run(*parsed)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def prepare(cfg, model_args):
    """(output dir created, resolved model path, tokenizer with a pad token) for a run."""
    from transformers import AutoTokenizer

    from policy.models import resolve_policy

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = resolve_policy(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return out, model_path, tokenizer


def load_model(model_path, cfg):
    """The causal LM to train: float32 on CPU, bfloat16 on a GPU."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.float32 if (cfg.use_cpu or not torch.cuda.is_available()) else torch.bfloat16
    return AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)


def resume_point(cfg) -> str | None:
    """The checkpoint to resume from: ``--resume_from_checkpoint`` if given, else the newest
    ``checkpoint-*`` in the output dir (open-r1's convention), so a re-run continues an interrupted one."""
    from transformers.trainer_utils import get_last_checkpoint

    if cfg.resume_from_checkpoint:
        return cfg.resume_from_checkpoint
    out = Path(cfg.output_dir)
    return get_last_checkpoint(str(out)) if out.is_dir() else None


def write_calibration_defaults(model_path: str | Path, out: Path) -> None:
    """Copy the source model's ``thinkgate.json`` into `out`, else write a defaults-only one
    (the agent's defaults apply until ``python -m evals.modes --calibrate`` writes values)."""
    src = Path(model_path) / CALIBRATION_FILE
    if src.is_file():
        shutil.copy(src, out / CALIBRATION_FILE)
    else:
        (out / CALIBRATION_FILE).write_text(json.dumps({"_comment": "agent defaults; calibrate with "
                                                                    "`python -m evals.modes --calibrate`"}))


def save_trained(trainer, tokenizer, out: Path, model_path: str | Path, merge_lora: bool):
    """Save the trained model (LoRA merged when `merge_lora`), its tokenizer and ``thinkgate.json``
    into `out` on the main process, and a LoRA model's adapter alone into ``out/adapter`` (PEFT's
    ``adapter_model.safetensors`` + ``adapter_config.json``: what a served adapter ships); returns the
    (merged) model."""
    trained = trainer.model
    if hasattr(trained, "peft_config") and trainer.accelerator.is_main_process:
        trained.save_pretrained(out / "adapter")
    if hasattr(trained, "merge_and_unload") and merge_lora:
        trained = trained.merge_and_unload()
    if trainer.accelerator.is_main_process:
        trained.save_pretrained(out)
        tokenizer.padding_side = "right"
        tokenizer.save_pretrained(out)
        write_calibration_defaults(model_path, out)
    return trained
