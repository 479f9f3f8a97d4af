"""What every in-process backend shares: a worker thread, prefix-cache slots and the decode loop.

Contract (`LocalPolicy`, subclassed by `TransformersPolicy` and `OnnxPolicy`):
- One generation runs at a time on a worker thread (a lock queues the rest), so the event
  loop stays free and concurrent requests never share a half-updated cache.
- Prefix cache: a few slots, each holding the token ids its backend state (KV cache) covers.
  A prompt takes the slot with the longest common prefix; the backend rolls the state back
  to that prefix (`_rollback`: the rollback after a probe) and only the new tokens are fed.
  An append-only transcript therefore costs one forward per new token, never a re-read.
- Each step: `_forward` → the next-token logits of the full vocabulary, `_entropy` → exact
  entropy and varentropy (nats) of those logits, `_pick` → greedy when temperature is 0,
  else temperature + top-p sampling with an optional seed.
- Stop strings end generation after the token that completes them (`policy.base`).
- Streaming: the first token is handed over at once, then tokens are coalesced into one delta
  per `emit_interval_s` (20 ms), so the event loop is woken ~3× less often than once per token.
A subclass provides `_new_state()`, `_rollback(slot, keep)`, `_forward(slot, ids)`,
`_entropy(logits)`, `_rng(seed)` and `_pick(logits, params, rng)`.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from policy.base import GenerationDelta, GenerationParams, HFTokenizerMixin, Policy, PromptTooLongError, text_delta


@dataclass
class Slot:
    """One prefix cache: the backend's state (`state`) covers exactly the tokens `ids`."""

    ids: list[int] = field(default_factory=list)
    state: object | None = None
    used: int = 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token-id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def special_tokens(tokenizer) -> tuple[str, ...]:
    """Every special token string of a Hugging Face tokenizer (stripped from untrusted text)."""
    return tuple(tokenizer.all_special_tokens) + tuple(
        t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if getattr(t, "special", False))


class LocalPolicy(HFTokenizerMixin, Policy):
    """A `Policy` that runs a model in this process, one step at a time (see the module contract).

    Subclasses set `tokenizer`, `name`, `max_context`, `eos_token_ids`, `special_tokens` and
    call `_init_slots(n)` in their constructor.
    """

    entropy_method = "exact"
    backend = "local"
    #: Deltas are handed to the event loop at most this often (seconds; the first token and the
    #: last at once): one cross-thread wake-up per token costs ~5 % of decode on 2 cores.
    emit_interval_s: float = 0.02

    def _init_slots(self, cache_slots: int) -> None:
        self._slots = [Slot() for _ in range(max(1, cache_slots))]
        self._clock = 0
        self._lock = threading.Lock()
        self.stats = {"generations": 0, "prompt_tokens": 0, "cached_tokens": 0, "generated_tokens": 0}

    # ------------------------------------------------------------------ backend hooks
    def _new_state(self, old=None):
        """An empty backend state (KV cache) for a slot; `old` is the slot's previous state (None
        if it has none), which a backend may clear and reuse instead of allocating anew."""
        raise NotImplementedError

    def _rollback(self, slot: Slot, keep: int) -> None:
        """Cut `slot.state` back to its first `keep` tokens (0 < keep < len(slot.ids))."""
        raise NotImplementedError

    def _forward(self, slot: Slot, ids: list[int]):
        """Feed `ids` after the state's tokens; return the last position's logits, shape [vocab]."""
        raise NotImplementedError

    def _entropy(self, logits) -> tuple[float, float]:
        """(entropy, varentropy) of softmax(logits), nats and nats²."""
        raise NotImplementedError

    def _rng(self, seed: int):
        """A random generator for sampling, seeded with `seed`."""
        raise NotImplementedError

    def _pick(self, logits, params: GenerationParams, rng) -> int:
        """The next token: argmax when temperature is 0, else a temperature/top-p sample."""
        raise NotImplementedError

    # ------------------------------------------------------------------ generation
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
                self._thread_setup()
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

    def _thread_setup(self) -> None:
        """Per-thread settings applied on the worker thread before generating (e.g. torch threads)."""

    def _acquire_slot(self, ids: list[int]) -> tuple[Slot, int]:
        best, best_len = None, -1
        for slot in self._slots:
            n = common_prefix(slot.ids, ids) if slot.state is not None else 0
            if n > best_len:
                best, best_len = slot, n
        if best_len == 0:  # nothing shared: take the least recently used slot
            best = min(self._slots, key=lambda s: s.used)
        self._clock += 1
        best.used = self._clock
        return best, max(best_len, 0)

    def _generate_sync(self, ids: list[int], params: GenerationParams, emit, cancel: threading.Event) -> None:
        with self._lock:
            slot, shared = self._acquire_slot(ids)
            keep = min(shared, len(ids) - 1)  # the last prompt token is always fed to get logits
            if slot.state is None or keep == 0:
                slot.state, slot.ids, keep = self._new_state(slot.state), [], 0
            elif len(slot.ids) > keep:
                self._rollback(slot, keep)
                slot.ids = slot.ids[:keep]
            cached = keep
            rng = None
            if params.temperature > 0:
                rng = self._rng(params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little"))
            stop_ids = set(self.eos_token_ids) | set(params.stop_token_ids)
            feed = ids[keep:]
            pend: GenerationDelta | None = None  # tokens not yet handed to the event loop
            last_emit = float("-inf")  # the first token goes out at once
            out: list[int] = []
            text_sent = ""
            finish, reason = "length", None
            try:
                for step in range(params.max_tokens):
                    if cancel.is_set():
                        break
                    logits = self._forward(slot, feed)
                    slot.ids += feed
                    ent, vent = self._entropy(logits)
                    tok = self._pick(logits, params, rng)
                    out.append(tok)
                    self.stats["generated_tokens"] += 1  # live: a cancelled generation stops counting here
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
                    new, text_sent = text_delta(text, text_sent, done)
                    last = done or step == params.max_tokens - 1
                    if pend is None:
                        pend = GenerationDelta(text=new, token_ids=[tok], entropies=[float(ent)],
                                               varentropies=[float(vent)], prompt_tokens=len(ids), cached_tokens=cached)
                    else:
                        pend.text += new
                        pend.token_ids.append(tok)
                        pend.entropies.append(float(ent))
                        pend.varentropies.append(float(vent))
                    now = time.monotonic()
                    if last or now - last_emit >= self.emit_interval_s:
                        pend.finish_reason, pend.stop_reason = (finish, reason) if last else (None, None)
                        emit(pend)
                        pend, last_emit = None, now
                    if done:
                        break
            except BaseException:
                slot.state, slot.ids = None, []  # never reuse a cache left half-written
                raise
            self.stats["generations"] += 1
            self.stats["prompt_tokens"] += len(ids)
            self.stats["cached_tokens"] += cached

    def reset_cache(self) -> None:
        """Forget every cached prefix (benchmarks use this to time a cold prompt); a backend that
        reuses its states (`_new_state(old)`) keeps the allocation, not the tokens."""
        with self._lock:
            for s in self._slots:
                s.state = self._new_state(s.state) if s.state is not None else None
                s.ids, s.used = [], 0
