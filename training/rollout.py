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
"""
from __future__ import annotations

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
