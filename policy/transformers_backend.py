"""The transformers backend: the reference engine (and training's), exact entropy from full logits.

Contract: `policy.local.LocalPolicy` (worker thread, prefix-cache slots, decode loop); the slot
state is a transformers `DynamicCache`, rolled back with ``crop``. Sampling uses a seeded
``torch.Generator``. On CPU the torch thread count is set on the worker thread that decodes
(torch's intra-op setting is per thread, so setting it on the constructing thread did nothing).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from policy.base import GenerationParams
from policy.entropy import logits_entropy
from policy.local import LocalPolicy, Slot, special_tokens
from policy.modes import eos_token_ids

class TransformersPolicy(LocalPolicy):
    """A causal LM served in-process with transformers.

    Args:
        model: a loaded `PreTrainedModel`, or a checkpoint dir / hub id to load.
        tokenizer: a loaded tokenizer; loaded from `model` when None.
        name: the served model name.
        device: "cpu", "cuda", …; default: cuda when available.
        cache_slots: how many prefix caches to keep (one per concurrent conversation).
        threads: torch intra-op threads on CPU; default: all cores.
    """

    entropy_method = "exact"
    backend = "transformers"

    def __init__(self, model, tokenizer=None, *, name: str | None = None, device: str | None = None,
                 cache_slots: int = 4, threads: int | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.threads = (threads or os.cpu_count() or 1) if self.device == "cpu" else None
        if self.threads:
            torch.set_num_threads(self.threads)
        if isinstance(model, (str, Path)):
            path = str(model)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            name = name or Path(path).name
        self.model = model.to(self.device).eval()
        self.weights = str(next(self.model.parameters()).dtype).replace("torch.float", "fp").replace("torch.bfloat", "bf")
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "policy") or "policy"
        self.max_context = int(getattr(model.config, "max_position_embeddings", 2048))
        self.eos_token_ids = tuple(sorted(eos_token_ids(model, tokenizer)))
        self.special_tokens = special_tokens(tokenizer)
        self.vocab_size = int(model.config.vocab_size)
        self._init_slots(cache_slots)

    # ---------------------------------------------------------------- LocalPolicy hooks
    def _thread_setup(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def _new_state(self, old=None):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _rollback(self, slot: Slot, keep: int) -> None:
        slot.state.crop(-(len(slot.ids) - keep))

    @torch.inference_mode()
    def _forward(self, slot: Slot, ids: list[int]) -> torch.Tensor:
        inp = torch.tensor([ids], device=self.device)
        res = self.model(input_ids=inp, past_key_values=slot.state, use_cache=True, logits_to_keep=1)
        return res.logits[0, -1]

    def _entropy(self, logits: torch.Tensor) -> tuple[float, float]:
        ent, vent = logits_entropy(logits)
        return float(ent), float(vent)

    def _rng(self, seed: int):
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        return gen

    @staticmethod
    def _pick(logits: torch.Tensor, params: GenerationParams, gen) -> int:
        """Greedy argmax at temperature 0, else a temperature + top-p sample drawn with `gen`."""
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sp, si = torch.sort(probs, descending=True)
            keep = torch.cumsum(sp, 0) - sp < params.top_p
            sp = sp * keep
            return int(si[torch.multinomial(sp / sp.sum(), 1, generator=gen)])
        return int(torch.multinomial(probs, 1, generator=gen))

    async def health(self) -> dict:
        return {"status": "ok", "model": self.name, "backend": "transformers", "device": self.device, **self.stats}
