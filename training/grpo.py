"""``python -m training.grpo``: adaptive GRPO — on chain sums from the warm-up checkpoint
(correctness + AdaptThink's no-think bonus, rollouts forced half to think and half not), or on
next-token reasoning (RPT prefix-match) with an overthinking penalty.

A thin script over TRL: our `ScriptArguments` + TRL's `GRPOConfig` + `ModelConfig`, from flags
or a YAML recipe (``--config training/recipes/cpu_smoke.yaml``). TRL's `GRPOTrainer` is the
engine (LoRA, vLLM generation, accelerate/DeepSpeed). This repo owns the data
(`training.data`), the rewards (`training.rewards`) and the reporting (`training.report`).

Output dir: a normal checkpoint (config, weights with LoRA merged, tokenizer) that
``thinkgate serve --model DIR`` loads, plus ``metrics.jsonl``, ``curves.png``,
``summary.json`` (held-out scores before/after) and ``thinkgate.json`` (agent thresholds).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CALIBRATION_FILE = "thinkgate.json"  # read by agent.config.AgentConfig.for_model (training does not import agent)


def write_calibration_defaults(model_path: str | Path, out: Path) -> None:
    """Copy the source model's ``thinkgate.json`` into `out`, else write a defaults-only one
    (the agent's defaults apply until ``python -m agent.eval --calibrate`` writes values)."""
    src = Path(model_path) / CALIBRATION_FILE
    if src.is_file():
        shutil.copy(src, out / CALIBRATION_FILE)
    else:
        (out / CALIBRATION_FILE).write_text(json.dumps({"_comment": "agent defaults; calibrate with "
                                                                    "`python -m agent.eval --calibrate`"}))


def resume_point(cfg) -> str | None:
    """The checkpoint to resume from: ``--resume_from_checkpoint`` if given, else the newest
    ``checkpoint-*`` in the output dir (open-r1's convention), so a re-run continues an interrupted one."""
    from transformers.trainer_utils import get_last_checkpoint

    if cfg.resume_from_checkpoint:
        return cfg.resume_from_checkpoint
    out = Path(cfg.output_dir)
    return get_last_checkpoint(str(out)) if out.is_dir() else None


def run(script, cfg, model_args) -> Path:
    """Train and save; returns the output dir. Raises ValueError for bad arguments."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer, get_peft_config

    from policy.models import cache_dir, resolve_policy
    from training.data import build_datasets
    from training.report import MetricsCallback, evaluate_held_out, plot_curves, stats_reward
    from training.rewards import get_reward_funcs

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = resolve_policy(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    index_dir = Path(script.index_dir) if script.index_dir else cache_dir() / "index"
    train, held = build_datasets(script, model_path, tokenizer, out, index_dir)

    funcs = get_reward_funcs(script.reward_funcs, think_budget=script.think_budget,
                             no_think_delta=script.no_think_delta, overlong_buffer=script.overlong_buffer,
                             max_completion_length=cfg.max_completion_length)
    weights = list(cfg.reward_weights) if cfg.reward_weights else [1.0] * len(funcs)
    if len(weights) != len(funcs):
        raise ValueError(f"reward_weights has {len(weights)} values for {len(funcs)} rewards {script.reward_funcs}")
    cfg.reward_weights = weights + [0.0]  # the stats pseudo-reward only logs
    dtype = torch.float32 if (cfg.use_cpu or not torch.cuda.is_available()) else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)

    held_rows = held.to_list() if held is not None else []
    before = evaluate_held_out(model, tokenizer, held_rows, funcs, weights, cfg.max_completion_length)
    rollout = None
    if script.task == "arith" and script.forced_modes:
        from training.rollout import forced_mode_rollout

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        rollout = forced_mode_rollout(script.think_share, script.mask_forced)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs + [stats_reward], args=cfg, train_dataset=train,
                          processing_class=tokenizer, peft_config=get_peft_config(model_args),
                          callbacks=[MetricsCallback(out / "metrics.jsonl")], rollout_func=rollout)
    trainer.train(resume_from_checkpoint=resume_point(cfg))

    trained = trainer.model
    if hasattr(trained, "merge_and_unload") and script.merge_lora:
        trained = trained.merge_and_unload()
    if trainer.accelerator.is_main_process:
        trained.save_pretrained(out)
        tokenizer.padding_side = "right"
        tokenizer.save_pretrained(out)
        after = evaluate_held_out(trained, tokenizer, held_rows, funcs, weights, cfg.max_completion_length)
        write_calibration_defaults(model_path, out)
        summary = {"model": model_args.model_name_or_path, "task": script.task, "steps": trainer.state.global_step,
                   "rewards": script.reward_funcs, "weights": weights, "held_out_before": before,
                   "held_out_after": after, "train_examples": len(train)}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_curves(out / "metrics.jsonl", out / "curves.png")
        print(json.dumps({"output_dir": str(out), "held_out_before": before, "held_out_after": after}, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse flags / a YAML recipe and run; bad arguments exit 2 with a one-line message."""
    from trl import GRPOConfig, ModelConfig, TrlParser

    from training.config import ScriptArguments

    parser = TrlParser((ScriptArguments, GRPOConfig, ModelConfig))
    try:
        script, cfg, model_args = parser.parse_args_and_config(argv)
        if model_args.model_name_or_path is None:
            model_args.model_name_or_path = "smollm2-135m-instruct"
        run(script, cfg, model_args)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
