"""Batched forced-mode generation: every item answered once thinking and once not, greedily.

Contract:
- `run_forced(model, tokenizer, items, prompts)` → one `ForcedRecord` per item, from three
  batched greedy `model.generate` passes over the served prompts (token ids as the agent
  builds them):
  * free draft (`draft_tokens`, stopped where the agent's gate stops): whether the model opens
    ``<think>`` itself (the learned decision), p(think token) at the first step and the mean
    entropy (nats) of the draft — exactly what the agent's gate reads;
  * direct: no ordinary token holding ``<`` (`policy.modes.ModeForcer`), so it answers at once;
  * think: ``<think>\\n`` is forced as the start of the turn and the model continues.
- Every mode of `evals.stats` (never, always, learned, gated, entropy, oracle) is derived from
  these paired records, because the agent's greedy path is one of the two: a model that
  opens ``<think>`` itself writes the think completion; one that does not, the direct one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from policy.format import THINK_OPEN
from policy.modes import ModeForcer, eos_token_ids, left_pad, think_sequences
from tasks import Item, family


@dataclass
class ForcedRecord:
    """Paired forced-mode results of one item.

    Attributes:
        p_think: probability (unmasked) of the think token as the first generated token.
        learned_think: the free greedy draft opens ``<think>`` (the model's own choice).
        draft_entropy: mean entropy (nats) of the free draft's tokens (the gate's score).
        direct_*, think_*: completion text, generated tokens (forced prefix included, EOS not) and score.
    """

    id: str
    family: str
    bucket: str
    p_think: float
    learned_think: bool
    draft_entropy: float
    draft_tokens: int
    direct_text: str
    direct_tokens: int
    direct_score: float
    think_text: str
    think_tokens: int
    think_score: float
    meta: dict = field(default_factory=dict)


class _Recorder:
    """Logits processor: records the entropy (nats) of each step's raw distribution and p of the
    think token at the first step; changes nothing."""

    def __init__(self, tokenizer):
        self.think_id = think_sequences(tokenizer)[0][0]
        self.entropies: list = []  # one [batch] tensor per step
        self.p_think = None

    def __call__(self, input_ids, scores):
        import torch

        logp = torch.log_softmax(scores.float(), dim=-1)
        self.entropies.append(-(logp.exp() * logp).sum(-1))
        if self.p_think is None:
            self.p_think = logp[:, self.think_id].exp()
        return scores


def greedy_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, proc=None):
    """Greedy generation of a left-padded batch (`prompts`: token id lists) through logits processor
    `proc` (None: none); returns (new ids without the EOS, ended with EOS) per row, in order."""
    import torch
    from transformers import LogitsProcessorList

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, att = left_pad(prompts, pad)
    eos = eos_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, logits_processor=LogitsProcessorList([proc] if proc else []), pad_token_id=pad,
                             eos_token_id=sorted(eos))
    rows = []
    for r in out[:, ids.shape[1]:].tolist():
        cut = next((i for i, t in enumerate(r) if t in eos), len(r))
        rows.append((r[:cut], cut < len(r)))
    return rows


def _draft_end(tokenizer, ids: list[int], ended: bool) -> tuple[int, bool]:
    """Where the agent's gate stops its draft of `ids`: (tokens, opened <think>). It stops after the
    token that completes ``<think>`` or a blank line; at EOS the EOS token counts."""
    for j in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:j])
        if THINK_OPEN in text:
            return j, True
        if "\n\n" in text:
            return j, False
    return len(ids) + int(ended), False


def _noop(input_ids, scores):
    return scores


def run_forced(model, tokenizer, items: list[Item], prompts: list[list[int]], *, think_tokens: int = 192,
               answer_tokens: int = 48, draft_tokens: int = 16, batch_size: int = 32,
               log=lambda msg: None) -> list[ForcedRecord]:
    """Paired direct/think greedy completions for `items` (prompts: served token ids, same order).

    Raises:
        ValueError: `items` and `prompts` differ in length.
    """
    if len(items) != len(prompts):
        raise ValueError(f"{len(items)} items but {len(prompts)} prompts")
    model.eval()
    think_prefix = tokenizer.encode(THINK_OPEN + "\n", add_special_tokens=False)
    order = sorted(range(len(items)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    by_index: dict[int, ForcedRecord] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b: b + batch_size]
        batch = [prompts[i] for i in idx]
        rec = _Recorder(tokenizer)
        free = greedy_batch(model, tokenizer, batch, draft_tokens, rec)
        direct = greedy_batch(model, tokenizer, batch, answer_tokens, ModeForcer(tokenizer, [False] * len(batch)))
        think = greedy_batch(model, tokenizer, [p + think_prefix for p in batch], think_tokens, _noop)
        for j, i in enumerate(idx):
            it, fam = items[i], family(items[i])
            d_ids, _ = direct[j]
            t_ids, _ = think[j]
            n_draft, opened = _draft_end(tokenizer, *free[j])
            n_draft = max(1, min(n_draft, draft_tokens))
            ents = [float(rec.entropies[s][j]) for s in range(n_draft)]
            d_text = tokenizer.decode(d_ids, skip_special_tokens=True)
            t_text = THINK_OPEN + "\n" + tokenizer.decode(t_ids, skip_special_tokens=True)
            by_index[i] = ForcedRecord(
                id=it.id, family=it.family, bucket=it.bucket, p_think=float(rec.p_think[j]), learned_think=opened,
                draft_entropy=sum(ents) / len(ents), draft_tokens=n_draft, direct_text=d_text,
                direct_tokens=len(d_ids), direct_score=fam.score(d_text, it), think_text=t_text,
                think_tokens=len(think_prefix) + len(t_ids), think_score=fam.score(t_text, it), meta=it.meta)
        log(f"forced generation {min(b + batch_size, len(order))}/{len(order)}")
    return [by_index[i] for i in range(len(items))]
