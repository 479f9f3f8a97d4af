"""The abstract async `Policy` every backend implements, and its value types.

Contract:
- A prompt is a string or a list of token ids. Agents pass token ids and keep the transcript
  append-only, so backends with a prefix cache (transformers here, vLLM's prefix caching)
  never re-read what they have seen.
- Every generated token carries its entropy in nats. `entropy_method` says how it was
  obtained: ``"exact"`` (from the full logits) or ``"topk"`` (from the top-k logprobs, with
  the tail mass bounded; see `policy.entropy.topk_entropy`).
- Stop strings end generation after the token that completes them; the token is kept whole
  (text and ids stay in step), so ``text`` may run a few characters past the stop string.
- Errors: `PromptTooLongError` (a ValueError) when prompt + max_tokens exceeds the context.
"""
from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length"]
EntropyMethod = Literal["exact", "topk"]


class PromptTooLongError(ValueError):
    """Prompt tokens + max_tokens exceed the model's context window."""

    def __init__(self, prompt_tokens: int, max_tokens: int, max_context: int):
        self.prompt_tokens, self.max_tokens, self.max_context = prompt_tokens, max_tokens, max_context
        super().__init__(
            f"prompt of {prompt_tokens} tokens + max_tokens {max_tokens} exceeds the context "
            f"window of {max_context} tokens"
        )


@dataclass
class GenerationParams:
    """Sampling parameters for one generation.

    Attributes:
        max_tokens: most tokens to generate (≥ 1).
        temperature: 0 means greedy; > 0 samples from softmax(logits / temperature).
        top_p: nucleus sampling mass in (0, 1].
        stop: stop strings; generation ends after the token that completes one of them.
        stop_token_ids: extra token ids that end generation (the model's EOS always does).
        seed: sampling seed; None for a fresh one.
        top_logprobs: k for backends that compute entropy from top-k logprobs.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    seed: int | None = None
    top_logprobs: int = 20

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Generation:
    """One finished generation.

    Attributes:
        text: decoded generated text (special tokens skipped).
        token_ids: generated ids, shape [n]; includes the EOS/stop token when one ended it.
        entropies: per-token entropy in nats, shape [n].
        finish_reason: "stop" (EOS or stop string) or "length" (max_tokens reached).
        stop_reason: the stop string or token id that ended it, None on "length".
        entropy_method: "exact" or "topk".
        varentropies: per-token variance of the surprisal (nats²), shape [n], where known.
        prompt_tokens: prompt length in tokens.
        cached_tokens: prompt tokens served from the prefix cache.
    """

    text: str
    token_ids: list[int]
    entropies: list[float]
    finish_reason: FinishReason
    stop_reason: str | int | None = None
    entropy_method: EntropyMethod = "exact"
    varentropies: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0


def text_delta(text: str, sent: str, final: bool) -> tuple[str, str]:
    """What a streamed generation adds: (new text, text sent so far) after decoding all its tokens to
    `text` when `sent` has gone out already. A piece that ends in an incomplete multi-byte character
    (U+FFFD) is held back until the next token, unless the generation is `final`.

    >>> text_delta("héllo", "h", False)
    ('éllo', 'héllo')
    >>> text_delta("h\ufffd", "h", False)
    ('', 'h')
    """
    new = text[len(sent):] if text.startswith(sent) else text
    if new.endswith("\ufffd") and not final:
        return "", sent
    return new, text


@dataclass
class GenerationDelta:
    """A streamed piece of a generation; the last one has `finish_reason` set.

    `text` is the new text since the previous delta (held back while a multi-byte
    character is incomplete); `token_ids`/`entropies` the new tokens.
    """

    text: str
    token_ids: list[int]
    entropies: list[float]
    varentropies: list[float] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0


class Policy(abc.ABC):
    """An LLM that generates text with per-token entropy. Async; safe to call concurrently
    (backends queue requests rather than interleave them on shared state)."""

    #: Served model name (what /v1/models lists).
    name: str = "policy"
    #: Context window in tokens.
    max_context: int = 2048
    #: Token ids that end a turn.
    eos_token_ids: tuple[int, ...] = ()
    #: Special token strings (stripped from untrusted text before it enters a prompt).
    special_tokens: tuple[str, ...] = ()
    #: "exact" or "topk".
    entropy_method: EntropyMethod = "exact"
    #: Engine name (transformers, onnx, vllm, remote): entropies, hence thresholds, depend on it.
    backend: str = "unknown"
    #: Weight format served (fp32, bf16, int8, int4, …): quantization shifts entropies.
    weights: str = "unknown"

    @abc.abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""

    @abc.abstractmethod
    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of `token_ids`, special tokens skipped."""

    @abc.abstractmethod
    def chat_prompt(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of `messages` ([{"role", "content"}]) rendered by the model's chat template."""

    @abc.abstractmethod
    def stream(self, prompt: str | Sequence[int], params: GenerationParams) -> AsyncIterator[GenerationDelta]:
        """Generate, yielding deltas; the last delta carries `finish_reason`.

        Raises:
            PromptTooLongError: prompt + max_tokens exceeds `max_context`.
        """

    async def generate(self, prompt: str | Sequence[int], params: GenerationParams,
                       on_text: Callable[[str], None] | None = None) -> Generation:
        """Generate to the end and return the whole `Generation` (collects `stream`).

        Args:
            on_text: called with each non-empty text delta as it arrives (for streaming callers).
        """
        ids: list[int] = []
        ents: list[float] = []
        vents: list[float] = []
        last: GenerationDelta | None = None
        async for delta in self.stream(prompt, params):
            ids += delta.token_ids
            ents += delta.entropies
            vents += delta.varentropies
            last = delta
            if on_text is not None and delta.text:
                on_text(delta.text)
        assert last is not None and last.finish_reason is not None, "stream ended without a finish reason"
        return Generation(
            text=self.detokenize(ids),
            token_ids=ids,
            entropies=ents,
            varentropies=vents,
            finish_reason=last.finish_reason,
            stop_reason=last.stop_reason,
            entropy_method=self.entropy_method,
            prompt_tokens=last.prompt_tokens,
            cached_tokens=last.cached_tokens,
        )

    async def health(self) -> dict:
        """A small dict describing the backend's state; raises when it cannot serve."""
        return {"status": "ok", "model": self.name}

    async def close(self) -> None:
        """Release resources (threads, connections)."""


class HFTokenizerMixin:
    """`tokenize`, `detokenize` and `chat_prompt` over a Hugging Face tokenizer in ``self.tokenizer``
    (shared by every backend that tokenizes locally)."""

    tokenizer = None

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of `token_ids`, special tokens skipped."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def chat_prompt(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of `messages` rendered by the tokenizer's chat template.

        Message contents are always text: a special-token string inside one (``<|im_end|>`` typed by
        a user, or in a document's name) is tokenized as ordinary characters, never as a control
        token — only the template's own markup yields control tokens. Contents without such a
        string tokenize exactly as the whole rendered template does (what training tokenizes)."""
        msgs = list(messages)
        specials = [t for t in (self.tokenizer.all_special_tokens or []) if t]
        if not any(t in str(m.get("content", "")) for m in msgs for t in specials):
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
            return self.tokenize(text)
        # render with placeholder contents, then tokenize the template's pieces as markup and each
        # content with special-token parsing off
        marks = [f"\ue000thinkgate-content-{i}\ue000" for i in range(len(msgs))]
        rendered = self.tokenizer.apply_chat_template([{**m, "content": mk} for m, mk in zip(msgs, marks)],
                                                      tokenize=False, add_generation_prompt=add_generation_prompt)
        ids: list[int] = []
        pos = 0
        for m, mk in zip(msgs, marks):
            at = rendered.find(mk, pos)
            if at < 0:  # the template dropped this message (e.g. a system prompt it replaces)
                continue
            ids += self.tokenize(rendered[pos:at])
            ids += list(self.tokenizer.encode(str(m["content"]), add_special_tokens=False,
                                              split_special_tokens=True))
            pos = at + len(mk)
        return ids + self.tokenize(rendered[pos:])
