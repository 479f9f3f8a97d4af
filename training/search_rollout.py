"""Rollouts that search (issue 29 item 2): GRPO completions in which ``<search>query</search>`` is
answered by the real retriever, as the served agent answers it (Search-R1, arXiv 2503.09516 §3.1).

Contract:
- `search_rollout(retriever, cfg, shown)` returns a TRL ``rollout_func(prompts, trainer) → dict``.
  Each completion is sampled in rounds: the policy writes until ``</search>``, its end of turn or
  its budget (``max_completion_length`` tokens *it* writes; retrieved tokens do not count). When a
  round ends at ``</search>`` (with budget left), the next round continues the completion; when it
  has searched fewer than ``cfg.max_retrievals`` times before, the query (`policy.format.find_search`) goes to the retriever and the new passages are
  appended exactly as `agent.nodes.retrieve_more` appends them: ``cfg.step_k`` hits not shown before
  (`shown[prompt]`: the ids of the prompt's own passages, plus earlier searches), above
  ``cfg.min_passage_score``, numbered after the passages already shown, as
  ``\\n<information>…</information>\\n\\n`` before that next round.
- The ``<information>`` tokens are masked from the loss: ``env_mask`` is 0 on them and 1 on every
  token the policy wrote (TRL multiplies it into the completion mask).
- Returns ``prompt_ids``, ``completion_ids`` (EOS kept when generated), ``logprobs`` = None (TRL
  recomputes them), ``env_mask`` and ``searches`` (calls answered per completion; forwarded to the
  reward functions, where `training.rewards.search_cost` reads it).
- ``generate(model, tokenizer, batch, max_new, trainer)`` is the sampler (default: transformers'
  ``generate`` with the trainer's temperature and top-p, stopping at ``</search>`` or an EOS id); tests
  pass a scripted one.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from policy.format import SEARCH_CLOSE, find_search


def _hf_generate(model, tok, batch: list[list[int]], max_new: int, trainer) -> list[list[int]]:
    """Sample one continuation per row (left-padded batch), stopping at ``</search>`` or EOS."""
    from training.rollout import _hf_sample

    return _hf_sample(model, tok, batch, max_new, trainer, [SEARCH_CLOSE])


def cut_round(ids: Sequence[int], tok, eos: set[int]) -> tuple[list[int], str]:
    """Trim one round's sampled ids to what the policy wrote: up to and including the first EOS
    (``"eos"``), else up to the token that completes ``</search>`` (``"search"``), else all of them
    (``"length"``). Returns (ids, how the round ended)."""
    from training.rollout import cut_at

    kept, ended = cut_at(ids, tok, eos, [SEARCH_CLOSE])
    return kept, ("eos" if ended else "search" if SEARCH_CLOSE in tok.decode(kept) else "length")


def search_rollout(retriever, cfg, shown: dict[str, list], batch_size: int = 32,
                   generate: Callable | None = None):
    """A TRL rollout_func whose completions search (see the module contract).

    Args:
        retriever: has ``search(query, k)`` returning hits (id, source, heading, text, score).
        cfg: the policy's `agent.config.AgentConfig` (step_k, min_passage_score, max_retrievals).
        shown: prompt text → ids of the passages its prompt already shows (their count numbers the
            next passage).
        batch_size: rows per generation call.

    Raises:
        KeyError: at rollout time, for a prompt with no entry in `shown`.
    """
    gen = generate or _hf_generate

    def rollout(prompts: list, trainer) -> dict:
        from policy.modes import eos_token_ids
        from tasks.prompt import information_turn, step_passages

        tok = trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        eos = eos_token_ids(model, tok)
        specials = [t for t in (tok.all_special_tokens or []) if t]
        budget = trainer.max_completion_length
        texts = [p if isinstance(p, str) else tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        prompt_ids = [tok.encode(t, add_special_tokens=False) for t in texts]
        n = len(prompts)
        comp: list[list[int]] = [[] for _ in range(n)]
        mask: list[list[int]] = [[] for _ in range(n)]
        written, searches = [0] * n, [0] * n
        seen = [set(shown[t]) for t in texts]
        n_shown = [len(shown[t]) for t in texts]
        was_training = model.training
        model.eval()
        active = list(range(n))
        while active:
            nxt = []
            for b in range(0, len(active), batch_size):
                rows = active[b: b + batch_size]
                left = max(budget - written[i] for i in rows)
                outs = gen(model, tok, [prompt_ids[i] + comp[i] for i in rows], left, trainer)
                for i, out in zip(rows, outs):
                    ids, how = cut_round(out[: budget - written[i]], tok, eos)
                    comp[i] += ids
                    mask[i] += [1] * len(ids)
                    written[i] += len(ids)
                    if how != "search" or written[i] >= budget:
                        continue
                    nxt.append(i)
                    if searches[i] >= cfg.max_retrievals:  # as the agent: a call past the limit is not answered
                        continue
                    query = find_search(tok.decode(ids)) or ""
                    new = step_passages(retriever, query, cfg, seen[i], n_shown[i] + 1, specials) if query else []
                    searches[i] += 1
                    if new:
                        info = tok.encode(information_turn(new), add_special_tokens=False)
                        comp[i] += info
                        mask[i] += [0] * len(info)
                        seen[i] |= {p["id"] for p in new}
                        n_shown[i] += len(new)
            active = nxt
        if was_training:
            model.train()
        return {"prompt_ids": prompt_ids, "completion_ids": comp, "logprobs": None, "env_mask": mask,
                "searches": searches}

    return rollout
