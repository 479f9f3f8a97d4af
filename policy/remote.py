"""Remote backend: an OpenAI-compatible completions server (``vllm serve`` fleet, llama.cpp's
``llama-server``, or any server that takes token-id prompts and returns top-k logprobs with token
ids), reached over HTTP with httpx.

Contract:
- Tokenisation is local (the served model's tokenizer), so prompts go out as token ids and the
  transcript stays append-only: the server's prefix cache (vLLM's automatic prefix caching)
  serves each next call.
- Entropy is estimated from the top-k logprobs the server returns (`policy.entropy.topk_entropy`,
  lower bound; ``entropy_method = "topk"``). vLLM caps k at its ``max_logprobs`` (20 by default).
- Token ids come back through vLLM's ``return_tokens_as_token_ids`` (tokens like ``token_id:42``)
  or as the ``id`` of each ``logprobs.content`` entry (llama.cpp). Text is decoded locally from them.
- Stop token ids a server ignores are enforced here (the stream is closed at the first one).
- Errors: HTTP failures, error chunks, and streams that end (or connections that drop) before a
  finish reason raise `RemoteError` with the server's status and message; the API maps it to 502.
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
    text_delta,
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

    def _tokens(self, lp: dict) -> tuple[list[int], list[float]]:
        """Token ids and top-k entropies (nats) of one chunk's ``logprobs``, in either layout:
        vLLM's legacy completions one (``tokens`` as ``token_id:N`` + ``top_logprobs`` dicts) or the
        chat-style one llama.cpp's server sends (``content``: [{id, logprob, top_logprobs: [{id, logprob}]}])."""
        if "content" in lp:
            entries = lp.get("content") or []
            ids = [int(e["id"]) for e in entries]
            ents = [topk_entropy([t["logprob"] for t in e.get("top_logprobs") or []], self.vocab_size)[0]
                    if e.get("top_logprobs") else 0.0 for e in entries]
            return ids, ents
        ids = [int(t.split(":", 1)[1]) if t.startswith("token_id:") else self.tokenizer.convert_tokens_to_ids(t)
               for t in lp.get("tokens") or []]
        ents = [topk_entropy(list(d.values()), self.vocab_size)[0] if d else 0.0 for d in lp.get("top_logprobs") or []]
        return ids, ents

    async def stream(self, prompt, params: GenerationParams) -> AsyncIterator[GenerationDelta]:
        """Stream a completion of `prompt` (text or token ids). The text of each delta is decoded here
        from the server's token ids (as the local backends do: a stop string's whole token is kept),
        so servers that cut the stop string out of their text (llama.cpp) read the same as vLLM.

        Raises:
            PromptTooLongError: prompt + max_tokens exceed the context window.
            RemoteError: the server answered an error, sent an unreadable chunk, or the connection
                or stream ended before a finish reason (a server that died mid-stream).
        """
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if len(ids) + params.max_tokens > self.max_context:
            raise PromptTooLongError(len(ids), params.max_tokens, self.max_context)
        stop_ids = set(self.eos_token_ids) | set(params.stop_token_ids)
        out: list[int] = []
        sent = ""
        finished = False
        try:
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
                        chunk = json.loads(data)
                        if "error" in chunk:
                            raise RemoteError(f"completions server error mid-stream: {str(chunk['error'])[:300]}")
                        choice = chunk["choices"][0]
                        tok_ids, ents = self._tokens(choice.get("logprobs") or {})
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        raise RemoteError(f"unreadable stream chunk: {data[:200]}") from exc
                    reason = choice.get("finish_reason")
                    finish = None if reason is None else ("length" if reason == "length" else "stop")
                    stop = choice.get("stop_reason")
                    hit = next((i for i, t in enumerate(tok_ids) if t in params.stop_token_ids), None)
                    if hit is not None and finish is None:  # a server that ignores stop_token_ids: stop here
                        tok_ids, ents, finish, stop = tok_ids[:hit + 1], ents[:hit + 1], "stop", tok_ids[hit]
                    out += tok_ids
                    text = self.tokenizer.decode(out, skip_special_tokens=True)
                    new, sent = text_delta(text, sent, finish is not None)
                    if finish == "stop" and stop is None:
                        if out and out[-1] in stop_ids:
                            stop = out[-1]
                        else:
                            stop = next((s for s in params.stop if s and s in text), None)
                    finished = finished or finish is not None
                    if tok_ids or new or finish is not None:
                        yield GenerationDelta(new, tok_ids, ents, [], finish, stop, len(ids), 0)
                    if finish is not None:
                        break
        except httpx.HTTPError as exc:
            raise RemoteError(f"completions server connection failed: {type(exc).__name__}: {exc}") from exc
        if not finished:
            raise RemoteError("the completions stream ended without a finish reason (the server died?)")

    async def health(self) -> dict:
        r = await self.client.get("/v1/models")
        if r.status_code != 200:
            raise RemoteError(f"completions server health: {r.status_code}")
        return {"status": "ok", "model": self.name, "backend": "remote", "url": str(self.client.base_url)}

    async def close(self) -> None:
        await self.client.aclose()
