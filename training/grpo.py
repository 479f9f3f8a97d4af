"""``python -m training.grpo``: adaptive GRPO — on chain sums from the warm-up checkpoint
(correctness + AdaptThink's no-think bonus, rollouts forced half to think and half not, the mode
decision optionally weighted apart as in Thinkless' decoupled GRPO: `training.decoupled`), or on
next-token reasoning (RPT prefix-match, RLP's information gain of a thought — scored by a frozen copy
of the starting model, `tasks.ntr.GainScorer` — and optional length penalties), with the same
forced-mode groups; or on two-hop questions (``task: hops``), where the policy's ``<search>`` calls are
answered by the real retriever during rollouts (`training.search_rollout`, the retrieved tokens masked
from the loss) and the reward is exact match minus a cost per search (Search-R1, issue 29); or on the
mixed workload of issue 27 (``task: mix``: GSM-Symbolic, multi-digit and one-step arithmetic), each
mode the served agent's branch (`training.rollout.served_mode_rollout`), rewarded by correctness, the
no-think bonus and a penalty on thinking tokens (AdaptThink + a length reward).

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
from pathlib import Path

from training.script import main_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run(script, cfg, model_args) -> Path:
    """Train and save; returns the output dir. Raises ValueError for bad arguments."""
    from trl import GRPOTrainer, get_peft_config

    from policy.models import cache_dir
    from training.data import build_datasets
    from training.decoupled import check_loss_type, decoupled_trainer_class
    from training.report import MetricsCallback, evaluate_held_out, plot_curves, stats_reward
    from training.rewards import get_reward_funcs
    from training.script import load_model, prepare, resume_point, save_trained

    if script.mode_token_weight > 0:
        check_loss_type(cfg.loss_type)
    out, model_path, tokenizer = prepare(cfg, model_args)
    index_dir = Path(script.index_dir) if script.index_dir else cache_dir() / "index"
    retriever = agent_cfg = None
    if script.task == "hops":  # the task index of tasks.hops (built once, through the public ingest path)
        from agent.config import AgentConfig
        from evals.hops import cache_dir as hops_dir
        from tasks.hops import build_index

        agent_cfg = AgentConfig.for_model(model_path)
        idx = Path(script.index_dir) if script.index_dir else hops_dir() / "index"
        retriever = build_index(idx.parent / "corpus", idx)
    train, held = build_datasets(script, model_path, tokenizer, out, index_dir, retriever, agent_cfg)

    scorer = None
    if "information_gain" in script.reward_funcs:  # RLP: thoughts scored by a frozen copy of the start
        from tasks.ntr import GainScorer

        scorer = GainScorer(load_model(model_path, cfg), tokenizer)
    funcs = get_reward_funcs(script.reward_funcs, think_budget=script.think_budget,
                             no_think_delta=script.no_think_delta, overlong_buffer=script.overlong_buffer,
                             max_completion_length=cfg.max_completion_length, ig_scorer=scorer,
                             ig_clip=script.ig_clip, search_cost=script.search_cost)
    weights = list(cfg.reward_weights) if cfg.reward_weights else [1.0] * len(funcs)
    if len(weights) != len(funcs):
        raise ValueError(f"reward_weights has {len(weights)} values for {len(funcs)} rewards {script.reward_funcs}")
    cfg.reward_weights = weights + [0.0]  # the stats pseudo-reward only logs
    model = load_model(model_path, cfg)

    held_rows = held.to_list() if held is not None else []
    before = evaluate_held_out(model, tokenizer, held_rows, funcs, weights, cfg.max_completion_length)
    rollout = None
    if script.task == "hops":  # the policy decides; its <search> calls are answered by the retriever
        from training.search_rollout import search_rollout

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        rollout = search_rollout(retriever, agent_cfg, {r["prompt"]: r["shown"] for r in train.to_list()})
    elif script.task == "mix":  # each mode is the served agent's branch (forced Answer: / <think>)
        from agent.config import AgentConfig
        from training.rollout import served_mode_rollout

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        rollout = served_mode_rollout(AgentConfig.for_model(model_path).answer_prefix, script.think_share,
                                      script.direct_tokens, script.answer_tokens)
    elif script.forced_modes:
        from training.rollout import forced_mode_rollout

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        rollout = forced_mode_rollout(script.think_share, script.mask_forced)
    trainer_cls = decoupled_trainer_class(script.mode_token_weight) if script.mode_token_weight > 0 else GRPOTrainer
    trainer = trainer_cls(model=model, reward_funcs=funcs + [stats_reward], args=cfg, train_dataset=train,
                          processing_class=tokenizer, peft_config=get_peft_config(model_args),
                          callbacks=[MetricsCallback(out / "metrics.jsonl")], rollout_func=rollout)
    trainer.train(resume_from_checkpoint=resume_point(cfg))

    trained = save_trained(trainer, tokenizer, out, model_path, script.merge_lora)
    if trainer.accelerator.is_main_process:
        after = evaluate_held_out(trained, tokenizer, held_rows, funcs, weights, cfg.max_completion_length)
        summary = {"model": model_args.model_name_or_path, "task": script.task, "steps": trainer.state.global_step,
                   "rewards": script.reward_funcs, "weights": weights, "held_out_before": before,
                   "held_out_after": after, "train_examples": len(train)}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_curves(out / "metrics.jsonl", out / "curves.png")
        print(json.dumps({"output_dir": str(out), "held_out_before": before, "held_out_after": after}, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse flags / a YAML recipe and run; bad arguments exit 2 with a one-line message."""
    from trl import GRPOConfig, ModelConfig

    from training.config import ScriptArguments

    main_for((ScriptArguments, GRPOConfig, ModelConfig), run, argv)


if __name__ == "__main__":
    main()
