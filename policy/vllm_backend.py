"""vLLM backend, in-process on a GPU (``pip install -e '.[gpu]'``).

Contract:
- Prompts go in as token ids (``{"prompt_token_ids": ids}``); automatic prefix caching is on,
  so an append-only transcript re-uses the KV cache of everything already seen.
- Entropy comes from the top-k logprobs of each sampled position (k ≤ ``max_logprobs``, 20
  by default in vLLM), estimated by `policy.entropy.topk_entropy` (``entropy_method="topk"``).
- Deltas are streamed with ``RequestOutputKind.DELTA``; cancelling the consumer aborts the request.
- Not exercised by CI (no GPU there); see the closing notes of the service issue.
"""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from policy.base import (
    GenerationDelta,
    GenerationParams,
    HFTokenizerMixin,
    Policy,
    PromptTooLongError,
)
from policy.entropy import topk_entropy


class VLLMPolicy(HFTokenizerMixin, Policy):
    """Args:
        model: checkpoint dir or hub id.
        name: served name (default: `model`).
        gpu_memory_utilization: share of GPU memory vLLM may take.
        max_model_len: context window (default: the model's).
        top_logprobs: k for the entropy estimate (≤ vLLM's max_logprobs).
    """

    entropy_method = "topk"
    backend = "vllm"
    weights = "bf16"

    def __init__(self, model: str, *, name: str | None = None, gpu_memory_utilization: float = 0.5,
                 max_model_len: int | None = None, top_logprobs: int = 20, **engine_kwargs):
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        args = AsyncEngineArgs(model=model, enable_prefix_caching=True, max_logprobs=max(top_logprobs, 20),
                               gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                               **engine_kwargs)
        self.engine = AsyncLLMEngine.from_engine_args(args)
        self.name = name or model
        self.top_logprobs = top_logprobs
        self.vocab_size = len(self.tokenizer)
        self.max_context = int(max_model_len or getattr(self.tokenizer, "model_max_length", 4096) or 4096)
        self.eos_token_ids = tuple(t for t in (self.tokenizer.eos_token_id,) if t is not None)
        self.special_tokens = tuple(self.tokenizer.all_special_tokens)

    async def stream(self, prompt, params: GenerationParams) -> AsyncIterator[GenerationDelta]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if len(ids) + params.max_tokens > self.max_context:
            raise PromptTooLongError(len(ids), params.max_tokens, self.max_context)
        sp = SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                            seed=params.seed, stop=list(params.stop) or None,
                            stop_token_ids=list(params.stop_token_ids) or None, include_stop_str_in_output=True,
                            logprobs=min(params.top_logprobs, self.top_logprobs),
                            output_kind=RequestOutputKind.DELTA)
        rid = uuid.uuid4().hex
        cached = 0
        async for out in self.engine.generate({"prompt_token_ids": ids}, sp, rid):
            o = out.outputs[0]
            cached = getattr(out, "num_cached_tokens", None) or cached
            ents = [topk_entropy([lp.logprob for lp in d.values()], self.vocab_size)[0] if d else 0.0
                    for d in (o.logprobs or [])]
            finish = None
            if out.finished:
                finish = "length" if o.finish_reason == "length" else "stop"
            stop = o.stop_reason
            if finish == "stop" and stop is None and o.token_ids and o.token_ids[-1] in self.eos_token_ids:
                stop = o.token_ids[-1]
            yield GenerationDelta(o.text, list(o.token_ids), ents, [], finish, stop if finish else None,
                                  len(ids), int(cached or 0))

    async def health(self) -> dict:
        await self.engine.check_health()
        return {"status": "ok", "model": self.name, "backend": "vllm"}

    async def close(self) -> None:
        self.engine.shutdown()
