"""Rollouts that keep both modes alive: a GRPO group of G completions is half forced to think
and half forced to answer at once (AdaptThink arXiv 2505.13417 §3.2 samples both modes per
prompt the same way).

Contract:
- `forced_mode_rollout(...)` returns a TRL ``rollout_func(prompts, trainer) → dict``.
  TRL hands it the generation batch, in which each prompt is repeated G = ``num_generations``
  times in a row; completion j of a group (j = index mod G) thinks when j < G·think_share,
  else answers at once. The mode is forced by `policy.modes.ModeForcer`: the think token
  (first token of ``<think>``) is the only one allowed at the first step, or it is masked and a
  no-think completion cannot open ``<think>`` later either (a first run without that ban
  learned to open it after a newline, 78 % "thinking" in forced 50/50 groups by step 9).
- The forced first token stays in the loss by default, so the group's advantage (think vs
  no-think samples of the same prompt) moves p(``<think>``) towards the better mode for that
  prompt — the decision is what RL must learn. ``mask_forced=True`` drops it from the loss
  instead (``env_mask`` 0 there): the modes' contents are trained, the decision is not.
- Returns ``prompt_ids``, ``completion_ids`` (EOS kept when generated), ``logprobs`` = None
  (TRL recomputes them), ``env_mask`` and ``forced_mode`` (forwarded to reward functions).
- `served_mode_rollout(answer_prefix, ...)`: the same forced groups, but each mode is the served
  agent's branch (a forced ``Answer:`` direct answer; ``<think>\n`` … ``</think>`` then the agent's
  answer opening), for a policy whose `AgentConfig.answer_prefix` is set (the Qwen models, issue 27).
"""
from __future__ import annotations

from collections.abc import Sequence

from policy.modes import ModeForcer, eos_token_ids, left_pad


def forced_mode_rollout(think_share: float = 0.5, mask_forced: bool = False, batch_size: int = 64):
    """A TRL rollout_func forcing the mode of each completion (see the module docstring).

    Raises:
        ValueError: think_share outside [0, 1].
    """
    if not 0.0 <= think_share <= 1.0:
        raise ValueError(f"think_share must be in [0, 1], got {think_share}")

    def rollout(prompts: list, trainer) -> dict:
        import torch
        from transformers import LogitsProcessorList

        tok = trainer.processing_class
        g = trainer.num_generations
        texts = [p if isinstance(p, str) else tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        prompt_ids = [tok.encode(t, add_special_tokens=False) for t in texts]
        modes = [(i % g) < round(g * think_share) for i in range(len(prompts))]
        eos = eos_token_ids(trainer.model, tok)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        model = trainer.accelerator.unwrap_model(trainer.model)
        device = next(model.parameters()).device
        completions: list[list[int]] = []
        was_training = model.training
        model.eval()
        for b in range(0, len(prompt_ids), batch_size):
            batch, think = prompt_ids[b: b + batch_size], modes[b: b + batch_size]
            ids, att = left_pad(batch, pad)
            with torch.no_grad():
                out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), do_sample=True,
                                     temperature=trainer.temperature, top_p=trainer.top_p,
                                     max_new_tokens=trainer.max_completion_length, pad_token_id=pad,
                                     eos_token_id=sorted(eos),
                                     logits_processor=LogitsProcessorList([ModeForcer(tok, think)]))
            for row in out[:, ids.shape[1]:].tolist():
                cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
                completions.append(row[:cut])
        if was_training:
            model.train()
        env_mask = [[0 if (mask_forced and j == 0) else 1 for j in range(len(c))] for c in completions]
        return {"prompt_ids": prompt_ids, "completion_ids": completions, "logprobs": None,
                "env_mask": env_mask, "forced_mode": ["think" if m else "no_think" for m in modes]}

    return rollout


def cut_at(ids: Sequence[int], tok, eos: set[int], stops: Sequence[str]) -> tuple[list[int], bool]:
    """Trim sampled ids to what one served generation keeps: up to and including the first EOS, else
    up to the token that completes the first of `stops` (e.g. ``</think>``), else all of them.
    Returns (ids, ended with EOS)."""
    ids = list(ids)
    end = next((i for i, t in enumerate(ids) if t in eos), len(ids))
    text = tok.decode(ids[:end])
    if any(s in text for s in stops):
        return ids[:next(j for j in range(1, end + 1) if any(s in tok.decode(ids[:j]) for s in stops))], False
    return (ids[:end + 1], True) if end < len(ids) else (ids, False)


def _hf_sample(model, tok, batch: list[list[int]], max_new: int, trainer, stops: Sequence[str]) -> list[list[int]]:
    """Sample one continuation per row of a left-padded batch, stopping at EOS or any of `stops`."""
    import torch

    eos = eos_token_ids(model, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, att = left_pad(batch, pad)
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), do_sample=True,
                             temperature=trainer.temperature, top_p=trainer.top_p, max_new_tokens=max_new,
                             pad_token_id=pad, eos_token_id=sorted(eos), stop_strings=list(stops) or None,
                             tokenizer=tok)
    return out[:, ids.shape[1]:].tolist()


def served_mode_rollout(answer_prefix: str, think_share: float = 0.5, direct_tokens: int = 32,
                        answer_tokens: int = 32, batch_size: int = 32, generate=None):
    """A TRL rollout_func whose two modes are the served agent's two branches (issue 27 item 3), as
    `evals.quality.answer_direct` / `answer_thinking` run them greedily on the served backend:

    * answer at once: `answer_prefix` (``Answer:``, the model's `AgentConfig.answer_prefix`) forced,
      then up to `direct_tokens` sampled, stopping at a blank line or ``<think>``;
    * think: ``<think>\\n`` forced, up to ``trainer.max_completion_length`` tokens of reasoning sampled,
      stopping at ``</think>`` or the end of the turn; then, unless the turn ended there, the agent's
      `agent.nodes.answer_opening` (``\\n`` + prefix after the model's own ``</think>``, else
      ``\\n</think>\\n`` + prefix) and up to `answer_tokens` of answer, stopping at a blank line.

    Completion j of each group of G = ``num_generations`` thinks when j < G·think_share (AdaptThink's
    forced both-mode groups, arXiv 2505.13417 §3.2). The decision is the first completion token (the
    think token, or the first token of the prefix: what `decision: learned` serving compares against
    the think token); it stays in the loss (``env_mask`` 1), so the group's advantage moves
    p(think token). Every other forced token is masked (``env_mask`` 0); sampled tokens are trained.
    Returns ``prompt_ids``, ``completion_ids``, ``logprobs`` = None, ``env_mask`` and ``forced_mode``.
    ``generate(model, tok, batch, max_new, trainer, stops)`` is the sampler (default: transformers'
    sampling at the trainer's temperature and top-p); tests pass a scripted one.

    Raises:
        ValueError: an empty answer_prefix (use `forced_mode_rollout`), think_share outside [0, 1], or a
            token budget < 1.
    """
    if not answer_prefix:
        raise ValueError("served_mode_rollout needs the model's answer_prefix (e.g. 'Answer:'); a model without "
                         "one decides by its free first token: use forced_mode_rollout")
    if not 0.0 <= think_share <= 1.0:
        raise ValueError(f"think_share must be in [0, 1], got {think_share}")
    if min(direct_tokens, answer_tokens) < 1:
        raise ValueError(f"direct_tokens and answer_tokens must be >= 1, got {direct_tokens}, {answer_tokens}")
    gen = generate or _hf_sample

    def rollout(prompts: list, trainer) -> dict:
        from agent.nodes import answer_opening
        from policy.format import THINK_CLOSE, THINK_OPEN

        tok = trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        eos = eos_token_ids(model, tok)
        enc = lambda s: list(tok.encode(s, add_special_tokens=False))  # noqa: E731
        g = trainer.num_generations
        texts = [p if isinstance(p, str) else tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        prompt_ids = [enc(t) for t in texts]
        think = [(i % g) < round(g * think_share) for i in range(len(prompts))]
        lead, opening = enc(answer_prefix), enc(THINK_OPEN + "\n")
        comp = [list(opening if t else lead) for t in think]
        mask = [[1] + [0] * (len(c) - 1) for c in comp]
        was_training = model.training
        model.eval()

        def sample(rows: list[int], max_new: int, stops: tuple[str, ...]) -> dict[int, tuple[list[int], bool]]:
            out = {}
            for b in range(0, len(rows), batch_size):
                part = rows[b: b + batch_size]
                for i, ids in zip(part, gen(model, tok, [prompt_ids[i] + comp[i] for i in part], max_new, trainer, stops)):
                    out[i] = cut_at(ids[:max_new], tok, eos, stops)
            return out

        n = len(prompts)
        direct = sample([i for i in range(n) if not think[i]], direct_tokens, ("\n\n", THINK_OPEN))
        reasoning = sample([i for i in range(n) if think[i]], trainer.max_completion_length, (THINK_CLOSE,))
        for i, (ids, _) in {**direct, **reasoning}.items():
            comp[i] += ids
            mask[i] += [1] * len(ids)
        go_on = [i for i, (ids, ended) in reasoning.items() if not ended]
        for i in go_on:
            tail = answer_opening(_Tokenizer(tok), answer_prefix, THINK_CLOSE in tok.decode(reasoning[i][0]))
            comp[i] += tail
            mask[i] += [0] * len(tail)
        for i, (ids, _) in sample(go_on, answer_tokens, ("\n\n",)).items():
            comp[i] += ids
            mask[i] += [1] * len(ids)
        if was_training:
            model.train()
        return {"prompt_ids": prompt_ids, "completion_ids": comp, "logprobs": None, "env_mask": mask,
                "forced_mode": ["think" if t else "no_think" for t in think]}

    return rollout


class _Tokenizer:
    """The one method of the `policy.base.Policy` interface that `agent.nodes.answer_opening` calls."""

    def __init__(self, tok):
        self._tok = tok

    def tokenize(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))
