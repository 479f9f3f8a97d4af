"""Remote backend: an OpenAI-compatible completions server (``vllm serve`` fleet, or any server
that returns top-k logprobs), reached over HTTP with httpx.

Contract:
- Tokenisation is local (the served model's tokenizer), so prompts go out as token ids and the
  transcript stays append-only: the server's prefix cache (vLLM's automatic prefix caching)
  serves each next call.
- Entropy is estimated from the top-k logprobs the server returns (`policy.entropy.topk_entropy`,
  lower bound; ``entropy_method = "topk"``). vLLM caps k at its ``max_logprobs`` (20 by default).
- Token ids come back through vLLM's ``return_tokens_as_token_ids`` (tokens like ``token_id:42``).
- Errors: HTTP failures raise `RemoteError` with the server's status and message.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

from policy.base import (
    GenerationDelta,
    GenerationParams,
    HFTokenizerMixin,
    Policy,
    PromptTooLongError,
)
from policy.entropy import topk_entropy


class RemoteError(RuntimeError):
    """The completions server answered with an error or an unreadable stream."""


class RemotePolicy(HFTokenizerMixin, Policy):
    """Args:
        base_url: server root, e.g. ``http://127.0.0.1:8001`` (``/v1/completions`` is appended).
        model: the served model name.
        tokenizer: the served model's tokenizer (object, or a path / hub id to load).
        api_key: bearer token, if the server wants one.
        max_context: context window; default: the tokenizer's ``model_max_length`` capped at 32768.
        client: an `httpx.AsyncClient` to use (tests pass one with a mock transport).
    """

    entropy_method = "topk"
    backend = "remote"

    def __init__(self, base_url: str, model: str, tokenizer, *, api_key: str | None = None,
                 max_context: int | None = None, client: httpx.AsyncClient | None = None, timeout: float = 300.0):
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.tokenizer = tokenizer
        self.name = model
        self.vocab_size = len(tokenizer)
        self.max_context = max_context or min(int(getattr(tokenizer, "model_max_length", 32768) or 32768), 32768)
        self.eos_token_ids = tuple(t for t in (tokenizer.eos_token_id,) if t is not None)
        self.special_tokens = tuple(tokenizer.all_special_tokens)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

    def _body(self, ids: list[int], params: GenerationParams) -> dict:
        body = {"model": self.name, "prompt": ids, "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "stream": True,
                "logprobs": params.top_logprobs, "return_tokens_as_token_ids": True,
                "include_stop_str_in_output": True, "skip_special_tokens": True}
        if params.stop:
            body["stop"] = list(params.stop)
        if params.stop_token_ids:
            body["stop_token_ids"] = list(params.stop_token_ids)
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    async def stream(self, prompt, params: GenerationParams) -> AsyncIterator[GenerationDelta]:
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if len(ids) + params.max_tokens > self.max_context:
            raise PromptTooLongError(len(ids), params.max_tokens, self.max_context)
        finished = False
        async with self.client.stream("POST", "/v1/completions", json=self._body(ids, params)) as r:
            if r.status_code >= 400:
                detail = (await r.aread()).decode(errors="replace")[:500]
                raise RemoteError(f"completions server answered {r.status_code}: {detail}")
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:].strip()
                if data == "[DONE]":
                    break
                try:
                    choice = json.loads(data)["choices"][0]
                except (ValueError, KeyError, IndexError) as exc:
                    raise RemoteError(f"unreadable stream chunk: {data[:200]}") from exc
                lp = choice.get("logprobs") or {}
                tok_ids = [int(t.split(":", 1)[1]) if t.startswith("token_id:") else self.tokenizer.convert_tokens_to_ids(t)
                           for t in lp.get("tokens") or []]
                ents = [topk_entropy(list(d.values()), self.vocab_size)[0] if d else 0.0
                        for d in lp.get("top_logprobs") or []]
                reason = choice.get("finish_reason")
                finish = None if reason is None else ("length" if reason == "length" else "stop")
                stop = choice.get("stop_reason")
                if finish == "stop" and stop is None and tok_ids and tok_ids[-1] in self.eos_token_ids:
                    stop = tok_ids[-1]
                finished = finished or finish is not None
                yield GenerationDelta(choice.get("text", ""), tok_ids, ents, [], finish, stop, len(ids), 0)
        if not finished:
            raise RemoteError("the completions stream ended without a finish reason")

    async def health(self) -> dict:
        r = await self.client.get("/v1/models")
        if r.status_code != 200:
            raise RemoteError(f"completions server health: {r.status_code}")
        return {"status": "ok", "model": self.name, "backend": "remote", "url": str(self.client.base_url)}

    async def close(self) -> None:
        await self.client.aclose()
