"""The transformers backend: exact per-token entropy from full logits, and a prefix KV cache.

Contract:
- One generation runs at a time on a worker thread (a lock queues the rest), so the event
  loop stays free and concurrent requests never share a half-updated cache.
- Prefix cache: a few slots, each a (token ids, DynamicCache) pair. A prompt reuses the slot
  with the longest common prefix; the cache is cropped back to that prefix (this is the
  rollback after a probe) and only the new tokens are fed. An append-only transcript
  therefore costs one forward per new token, never a re-read of the prompt.
- Greedy when temperature is 0, else temperature + top-p sampling with an optional seed.
"""
from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from policy.base import (
    GenerationDelta,
    GenerationParams,
    HFTokenizerMixin,
    Policy,
    PromptTooLongError,
)
from policy.entropy import logits_entropy


@dataclass
class _Slot:
    ids: list[int] = field(default_factory=list)  # tokens whose keys/values the cache holds
    cache: object | None = None
    used: int = 0


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class TransformersPolicy(HFTokenizerMixin, Policy):
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

    def __init__(self, model, tokenizer=None, *, name: str | None = None, device: str | None = None,
                 cache_slots: int = 4, threads: int | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            torch.set_num_threads(threads or os.cpu_count() or 1)
        if isinstance(model, (str, Path)):
            path = str(model)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            name = name or Path(path).name
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "policy") or "policy"
        self.max_context = int(getattr(model.config, "max_position_embeddings", 2048))
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_token_ids = tuple(sorted(e for e in eos if e is not None))
        self.special_tokens = tuple(tokenizer.all_special_tokens) + tuple(
            t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if getattr(t, "special", False)
        )
        self.vocab_size = int(model.config.vocab_size)
        self._slots = [_Slot() for _ in range(max(1, cache_slots))]
        self._clock = 0
        self._lock = threading.Lock()
        self.stats = {"generations": 0, "prompt_tokens": 0, "cached_tokens": 0, "generated_tokens": 0}

    # ---------------------------------------------------------------- generation
    async def stream(self, prompt, params: GenerationParams) -> AsyncIterator[GenerationDelta]:
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("prompt is empty")
        if len(ids) + params.max_tokens > self.max_context:
            raise PromptTooLongError(len(ids), params.max_tokens, self.max_context)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                self._generate_sync(ids, params, emit, cancel)
            except BaseException as exc:  # surfaced to the consumer
                emit(exc)
            finally:
                emit(None)

        fut = loop.run_in_executor(None, work)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            await asyncio.shield(fut)

    def _acquire_slot(self, ids: list[int]) -> tuple[_Slot, int]:
        best, best_len = None, -1
        for slot in self._slots:
            n = _common_prefix(slot.ids, ids) if slot.cache is not None else 0
            if n > best_len:
                best, best_len = slot, n
        if best_len == 0:  # nothing shared: take the least recently used slot
            best = min(self._slots, key=lambda s: s.used)
        self._clock += 1
        best.used = self._clock
        return best, max(best_len, 0)

    @torch.inference_mode()
    def _generate_sync(self, ids: list[int], params: GenerationParams, emit, cancel: threading.Event) -> None:
        from transformers import DynamicCache

        with self._lock:
            slot, shared = self._acquire_slot(ids)
            keep = min(shared, len(ids) - 1)  # the last prompt token is always fed to get logits
            if slot.cache is None or keep == 0:
                slot.cache, slot.ids, keep = DynamicCache(config=self.model.config), [], 0
            elif len(slot.ids) > keep:
                slot.cache.crop(-(len(slot.ids) - keep))
                slot.ids = slot.ids[:keep]
            cached = keep
            gen = None
            if params.temperature > 0:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little"))
            stop_ids = set(self.eos_token_ids) | set(params.stop_token_ids)
            feed = ids[keep:]
            out: list[int] = []
            text_sent = ""
            finish, reason = "length", None
            try:
                for step in range(params.max_tokens):
                    if cancel.is_set():
                        break
                    inp = torch.tensor([feed], device=self.device)
                    res = self.model(input_ids=inp, past_key_values=slot.cache, use_cache=True, logits_to_keep=1)
                    slot.ids += feed
                    logits = res.logits[0, -1]
                    ent, vent = logits_entropy(logits)
                    tok = self._pick(logits, params, gen)
                    out.append(tok)
                    feed = [tok]
                    done = False
                    if tok in stop_ids:
                        finish, reason, done = "stop", tok, True
                    text = self.tokenizer.decode(out, skip_special_tokens=True)
                    if not done and params.stop:
                        tail_from = max(0, len(text_sent) - max(len(s) for s in params.stop))
                        for s in params.stop:
                            if s and s in text[tail_from:]:
                                finish, reason, done = "stop", s, True
                                break
                    new = text[len(text_sent):] if text.startswith(text_sent) else text
                    if new.endswith("\ufffd") and not done:
                        new = ""  # incomplete multi-byte character: wait for the next token
                    else:
                        text_sent = text
                    last = done or step == params.max_tokens - 1
                    emit(GenerationDelta(
                        text=new, token_ids=[tok], entropies=[float(ent)], varentropies=[float(vent)],
                        finish_reason=(finish if last else None), stop_reason=(reason if last else None),
                        prompt_tokens=len(ids), cached_tokens=cached,
                    ))
                    if done:
                        break
            except BaseException:
                slot.cache, slot.ids = None, []  # never reuse a cache left half-written
                raise
            self.stats["generations"] += 1
            self.stats["prompt_tokens"] += len(ids)
            self.stats["cached_tokens"] += cached
            self.stats["generated_tokens"] += len(out)

    @staticmethod
    def _pick(logits: torch.Tensor, params: GenerationParams, gen) -> int:
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sp, si = torch.sort(probs, descending=True)
            keep = torch.cumsum(sp, 0) - sp < params.top_p
            sp = sp * keep
            return int(si[torch.multinomial(sp / sp.sum(), 1, generator=gen)])
        return int(torch.multinomial(probs, 1, generator=gen))

    def reset_cache(self) -> None:
        """Drop every cached prefix (benchmarks use this to time a cold prompt)."""
        with self._lock:
            for s in self._slots:
                s.cache, s.ids, s.used = None, [], 0

    async def health(self) -> dict:
        return {"status": "ok", "model": self.name, "backend": "transformers", "device": self.device, **self.stats}
