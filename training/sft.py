"""``python -m training.sft`` (also ``thinkgate train --stage sft``): the dual-mode warm-up.

A thin script over TRL's `SFTTrainer` (completion-only loss on prompt-completion rows; LoRA
through TRL's `ModelConfig` flags). Our part is the data (`training.dual`): every training
item appears with a think target and a no-think target, so afterwards the first generated
token (``<`` of ``<think>``, or the answer) is the mode decision and p(``<think>``) a signal.

Loss normalisation (``--row_mean_loss``, default off): TRL averages the NLL over all completion
tokens of a batch, so a 2-token no-think answer weighs ~1/40 of a 75-token trace (forced no-think
answered "4 + 8" with 13 while the same checkpoint wrote "4 + 8 = 12" when thinking). With it on,
each row's loss is the mean over its own completion tokens and the batch loss the mean over rows —
the per-sequence normalisation 1/|o_i| of GRPO (DeepSeekMath, arXiv 2402.03300, Eq. 3) applied to
SFT. Measured (docs/results/eval-sft-v2, eval-rl-v2): direct accuracy on easy sums rose only
0.43 → 0.48, forced-think fell 0.93 → 0.83 on easy, the model's own think-rate dropped to 3 %, and
16 RL steps from it ended at always-think with lower accuracy than the token-mean run. Hence off.

Paired batches (``--pair_modes``, on in the recipe): TRL's loss is the token mean over a batch,
so a row's first token — its mode decision — weighs 1 / (completion tokens in its batch). Under
``group_by_length`` a hard item's direct answer sits among short rows and its trace among long
ones, so its no-think decision weighed 21× its think decision (computed over the 3,200 rows of
the recipe; after that warm-up p(``<think>``) was 0.013 on hard and 0.78 on easy). `PairedLengthSampler`
keeps both rows of an item in one batch, so the two decisions of every prompt weigh the same,
while batches are still grouped by length (padding ≈ 2(P + T) / (2P + T) instead of random
batches' ~2×).

Output dir: a checkpoint (LoRA merged) that ``thinkgate serve --model DIR`` and
``python -m training.grpo --model_name_or_path DIR`` load, ``thinkgate.json`` (agent
defaults until calibrated), ``summary.json`` and ``metrics.jsonl``.
Go/no-go (`python -m evals.modes --models DIR`): forced-think must beat forced-no-think on
the hard bucket by ≥ 20 points.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from training.decoupled import check_mode_token_weight
from training.script import main_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class SFTScriptArguments:
    """Data of the warm-up."""

    items_per_bucket: int = field(default=800, metadata={"help": "training items per difficulty bucket (each gives 2 rows)"})
    seed_data: int = field(default=1, metadata={"help": "generator seed of the training split (dev=2, test=3 are held out)"})
    merge_lora: bool = field(default=True, metadata={"help": "merge LoRA adapters into the saved checkpoint"})
    mode_token_weight: float = field(default=0.0, metadata={
        "help": "λ: add λ × the mean over rows of the first completion token's NLL (the mode decision) to TRL's "
                "token-mean loss, so a think row's decision weighs as much as a no-think row's (decoupled as in "
                "Thinkless arXiv 2505.13379 Eq. 5); 0: off"})
    pair_modes: bool = field(default=False, metadata={
        "help": "put both rows of an item (think and no-think) in the same batch, batches grouped by length "
                "(PairedLengthSampler), so each prompt's two mode decisions weigh the same under the token-mean "
                "loss; needs an even per-device batch size"})
    star_file: str | None = field(default=None, metadata={
        "help": "a STaR file (python -m training.star): train on its items, each think target the policy's own "
                "solution (issue 27); unset: the chain sums of tasks.arithmetic with programmatic traces"})
    search_file: str | None = field(default=None, metadata={
        "help": "a search-trace file (python -m training.search, issue 29): train on its token ids, the retrieved "
                "<information> blocks and the prompt masked from the loss; replaces the dual-mode rows"})
    agent_config: str | None = field(default=None, metadata={
        "help": "JSON object of agent settings written over the copied thinkgate.json of the output (e.g. a model "
                "that decides by its own first token: {\"answer_prefix\": \"\", \"tau_think\": 99})"})
    row_mean_loss: bool = field(default=False, metadata={
        "help": "loss = mean over rows of each row's mean completion-token NLL (both modes weigh the same); "
                "off: TRL's mean over all completion tokens of the batch"})

    def __post_init__(self) -> None:
        if self.items_per_bucket < 1:
            raise ValueError(f"items_per_bucket must be >= 1, got {self.items_per_bucket}")
        check_mode_token_weight(self.mode_token_weight)
        if self.mode_token_weight > 0 and self.row_mean_loss:
            raise ValueError("mode_token_weight adds to TRL's token-mean loss; it cannot be combined with row_mean_loss")
        if self.seed_data in (2, 3):
            raise ValueError(f"seed_data must not be a held-out seed (2 = dev, 3 = test), got {self.seed_data}")
        if self.search_file is not None and not Path(self.search_file).is_file():
            raise ValueError(f"search_file must be an existing file (python -m training.search), got {self.search_file!r}")
        if self.search_file is not None and (self.pair_modes or self.star_file):
            raise ValueError("search_file rows are not dual-mode pairs: it cannot be combined with pair_modes or star_file")
        if self.agent_config is not None:
            try:
                if not isinstance(json.loads(self.agent_config), dict):
                    raise ValueError
            except ValueError:
                raise ValueError(f"agent_config must be a JSON object, got {self.agent_config!r}") from None
        if self.star_file is not None and not Path(self.star_file).is_file():
            raise ValueError(f"star_file must be an existing STaR file (python -m training.star), got {self.star_file!r}")


def row_mean_nll(logits, labels):
    """Mean over rows of each row's mean next-token NLL (nats) on its labelled tokens.

    Args:
        logits: [batch, seq, vocab] model outputs (position t predicts token t + 1).
        labels: [batch, seq] token ids, -100 where no loss is taken (prompt, padding).
    Returns:
        A scalar tensor; rows without a labelled token are left out (0 if none has one).

    Example: a row with NLLs (1, 1) and a row with (3,) give (1 + 3) / 2 = 2, where the token mean
    would give 5 / 3.
    """
    import torch.nn.functional as F

    target = labels[:, 1:]
    mask = target != -100
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), target.clamp(min=0), reduction="none") * mask
    counts = mask.sum(dim=1)
    rows = counts > 0
    if not rows.any():
        return nll.sum() * 0.0
    return (nll.sum(dim=1)[rows] / counts[rows]).mean()


def decision_weighted_nll(logits, labels, weight: float):
    """Token-mean next-token NLL (nats) over all labelled tokens of the batch (TRL's SFT loss) plus
    `weight` × the mean over rows of each row's first labelled token NLL — in a dual-mode row the
    mode decision (``<`` of ``<think>`` or the first answer token), which the token mean weighs
    1/|trace| in a think row (decoupled as in Thinkless, arXiv 2505.13379 Eq. 5).

    Args:
        logits: [batch, seq, vocab] model outputs (position t predicts token t + 1), or a callable
            mapping the [N] (row, position) pairs that are scored to their [N, vocab] logits (so that
            a caller can apply the LM head to those positions only).
        labels: [batch, seq] token ids, -100 where no loss is taken (prompt, padding).
        weight: λ ≥ 0.
    Returns:
        A scalar tensor (0 if no token is labelled).

    Example: rows with NLLs (1, 1) and (3,) and λ = 1 give 5 / 3 + (1 + 3) / 2.
    """
    import torch
    import torch.nn.functional as F

    mask = labels[:, 1:] != -100
    if not mask.any():
        return (logits.sum() if torch.is_tensor(logits) else labels.sum()) * 0.0
    rows, pos = mask.nonzero(as_tuple=True)
    picked = logits[rows, pos] if torch.is_tensor(logits) else logits(rows, pos)
    nll = F.cross_entropy(picked.float(), labels[rows, pos + 1], reduction="none")
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]  # nonzero is row-major: a row's first labelled position comes first
    return nll.mean() + weight * nll[first].mean()


class PairedLengthSampler:
    """Batches that hold both rows of each item, grouped by length.

    Rows ``2i`` and ``2i + 1`` are item i's two rows (`training.dual.dual_mode_rows` order). Like
    transformers' `LengthGroupedSampler`: items are shuffled, cut into mega-batches of
    ``mega × batch_size / 2`` items, each sorted by length (longest first), and each item's rows are
    yielded together, so every run of `batch_size` consecutive indices holds whole pairs.

    Args:
        lengths: [2n] token lengths of the rows (an item's sort key is the longer of its two).
        batch_size: rows per optimizer batch (per-device batch × gradient accumulation); even.
        seed: shuffling seed; epoch ``e`` uses ``seed + e`` (deterministic, so resuming skips the
            same batches).
        mega: mega-batch size in batches (50, as in `LengthGroupedSampler`).
    Raises:
        ValueError: an odd number of rows or an odd batch size.

    >>> s = PairedLengthSampler([5, 2, 9, 3, 7, 2, 4, 2], batch_size=4, seed=0)
    >>> order = list(s)
    >>> sorted(order) == list(range(8)) and all(order[k] // 2 == order[k + 1] // 2 for k in range(0, 8, 2))
    True
    """

    def __init__(self, lengths, batch_size: int, seed: int = 0, mega: int = 50):
        if len(lengths) % 2:
            raise ValueError(f"paired rows need an even number of rows, got {len(lengths)}")
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"pair_modes needs an even batch size (per-device batch x accumulation), got {batch_size}")
        self.keys = [max(lengths[2 * i], lengths[2 * i + 1]) for i in range(len(lengths) // 2)]
        self.pairs_per_mega = mega * batch_size // 2
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle differently in epoch `epoch` (called by accelerate's data loader)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return 2 * len(self.keys)

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.keys), generator=g).tolist()
        for m in range(0, len(perm), self.pairs_per_mega):
            for i in sorted(perm[m: m + self.pairs_per_mega], key=lambda i: -self.keys[i]):
                yield 2 * i
                yield 2 * i + 1


def _trainer_class(row_mean: bool, mode_token_weight: float = 0.0, pair_modes: bool = False):
    """TRL's `SFTTrainer`, or a subclass whose loss is `row_mean_nll` or, with ``mode_token_weight``
    > 0, `decision_weighted_nll` (TRL's metrics are not logged for either); with `pair_modes` its
    training batches come from `PairedLengthSampler`."""
    from trl import SFTTrainer

    if pair_modes:
        base = _trainer_class(row_mean, mode_token_weight)

        class PairedSFTTrainer(base):
            """The trainer above, its training rows batched in pairs by `PairedLengthSampler`."""

            def _get_train_sampler(self, train_dataset=None):
                data = self.train_dataset if train_dataset is None else train_dataset
                return PairedLengthSampler([len(x) for x in data["input_ids"]],
                                           self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                           seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed)

        return PairedSFTTrainer

    if mode_token_weight > 0:
        def loss_and_outputs(trainer, model, inputs, labels):
            lm = trainer.accelerator.unwrap_model(model)
            lm = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # LoRA layers stay inside
            hidden = lm.model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                              use_cache=False).last_hidden_state
            # the LM head only where a token is scored: no [batch, seq, vocab] logits
            return decision_weighted_nll(lambda r, p: lm.lm_head(hidden[r, p]), labels, mode_token_weight), None
    elif row_mean:
        def loss_and_outputs(trainer, model, inputs, labels):
            outputs = model(**inputs, use_cache=False)
            return row_mean_nll(outputs.logits, labels), outputs
    else:
        return SFTTrainer

    class OwnLossSFTTrainer(SFTTrainer):
        """`SFTTrainer` whose loss is computed by this module from the labels."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {k: v for k, v in inputs.items() if k not in ("completion_mask", "assistant_masks")}
            labels = inputs.pop("labels")
            loss, outputs = loss_and_outputs(self, model, inputs, labels)
            if num_items_in_batch is not None:  # the Trainer then leaves accumulation scaling to the loss
                loss = loss / self.current_gradient_accumulation_steps
            return (loss, outputs) if return_outputs else loss

    return OwnLossSFTTrainer


def run(script: SFTScriptArguments, cfg, model_args) -> Path:
    """Train and save; returns the output dir."""
    from datasets import Dataset
    from trl import get_peft_config

    from training.dual import dual_mode_rows, train_items
    from training.script import load_model, prepare, resume_point, save_trained
    from training.report import MetricsCallback

    out, model_path, tokenizer = prepare(cfg, model_args)
    if script.search_file:
        from training.search import search_rows

        rows = search_rows(script.search_file)
        data = Dataset.from_list(rows)
    elif script.star_file:
        from training.star import star_rows

        items = [it for it, _ in star_rows(script.star_file)]
    else:
        items = train_items(script.items_per_bucket, script.seed_data)
    if not script.search_file:
        rows = dual_mode_rows(items, tokenizer)
        data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    model = load_model(model_path, cfg)
    if (script.row_mean_loss or script.mode_token_weight > 0) and getattr(cfg, "padding_free", False):
        name = "row_mean_loss" if script.row_mean_loss else "mode_token_weight"
        raise ValueError(f"{name} needs padded rows; it cannot be combined with padding_free=True")
    if script.pair_modes and getattr(cfg, "packing", False):
        raise ValueError("pair_modes batches whole rows; it cannot be combined with packing=True")
    trainer_cls = _trainer_class(script.row_mean_loss, script.mode_token_weight, script.pair_modes)
    trainer = trainer_cls(model=model, args=cfg, train_dataset=data, processing_class=tokenizer,
                          peft_config=get_peft_config(model_args), callbacks=[MetricsCallback(out / "metrics.jsonl")])
    if script.pair_modes and len(trainer.train_dataset) != len(rows):  # pairs would no longer be (2i, 2i + 1)
        raise ValueError(f"pair_modes needs every dual-mode row; {len(rows)} built, "
                         f"{len(trainer.train_dataset)} left after TRL's preprocessing")
    trainer.train(resume_from_checkpoint=resume_point(cfg))
    save_trained(trainer, tokenizer, out, model_path, script.merge_lora)
    if script.agent_config and trainer.accelerator.is_main_process:
        from agent.config import CALIBRATION_FILE

        cal = out / CALIBRATION_FILE
        data_cal = json.loads(cal.read_text()) if cal.is_file() else {}
        data_cal.pop("calibrated", None)  # the base's calibration no longer describes this model
        cal.write_text(json.dumps({**data_cal, **json.loads(script.agent_config)}, indent=2))
    if trainer.accelerator.is_main_process:
        summary = {"stage": "sft", "model": model_args.model_name_or_path, "rows": len(rows),
                   "items_per_bucket": script.items_per_bucket, "star_file": script.star_file, "search_file": script.search_file,
                   "row_mean_loss": script.row_mean_loss, "pair_modes": script.pair_modes,
                   "mode_token_weight": script.mode_token_weight,
                   "steps": trainer.state.global_step,
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
