"""Serving logic: requests in, a response model or an `ErrorResponse` out (never an exception
for bad input). Streams are async iterators of SSE lines ending with ``data: [DONE]``.

Contract:
- Unknown model → 404 ``model_not_found``; input longer than the context allows → 400
  ``context_length_exceeded``; running + queued turns at their bounds → 429 with ``Retry-After``;
  past the per-request deadline → 504 ``deadline_exceeded``; anything else that fails → 500 with
  an error id that is also logged with the traceback (never a 400: a bug is not the client's).
  `create_error_response` maps an exception for both paths; a stream that already started
  carries it as one ``data: {"error": …}`` event (`create_streaming_error_response`) followed by
  ``[DONE]``.
- Usage comes from the turn's token ledger (`agent.turn.TokenLedger`): completion_tokens is every
  token generated for the turn (reasoning, probes, answer) and never exceeds
  ``max_completion_tokens`` (or ``max_tokens``); reasoning_tokens is counted inside it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable

from agent.runner import Agent, Turn
from agent.turn import TokenBudget
from api import metrics
from api.admission import Admission
from api.protocol import (ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, Choice, ChunkChoice,
                          DeltaMessage, DocumentIn, DocumentList, DocumentOut, ErrorResponse, ModelCard, ModelList,
                          ResponseMessage, SearchHit, SearchResponse, ThreadDeleted, ThreadMessage, ThreadOut, Usage,
                          _cid)
from policy.base import PromptTooLongError
from policy.remote import RemoteError
from retrieval.index import document_id

log = logging.getLogger("thinkgate.api")

# Room left in the context for passages, reasoning and information blocks (tokens).
PASSAGE_RESERVE = 1536


def create_error_response(exc: BaseException) -> ErrorResponse:
    """The one mapping of a failure to OpenAI's error shape (plain and streaming responses).

    `PromptTooLongError` → 400 ``context_length_exceeded``; `TimeoutError` (the request deadline)
    → 504 ``deadline_exceeded``; `RemoteError` (the remote completions server failed or died) → 502
    ``backend_error`` with its message; any other exception → 500 whose message carries an id that
    is logged with the traceback."""
    if isinstance(exc, PromptTooLongError):
        return ErrorResponse.make(str(exc), 400, param="messages", code="context_length_exceeded")
    if isinstance(exc, TimeoutError):
        return ErrorResponse.make("the request did not finish within the server's deadline "
                                  "(THINKGATE_REQUEST_TIMEOUT_S); retry with a smaller max_completion_tokens "
                                  "or reasoning_effort", 504, type="server_error", code="deadline_exceeded")
    if isinstance(exc, RemoteError):
        log.warning("policy backend failed: %s", exc)
        return ErrorResponse.make(f"the policy backend failed: {exc}", 502, type="server_error", code="backend_error")
    eid = uuid.uuid4().hex[:12]
    log.error("internal error %s", eid, exc_info=(type(exc), exc, exc.__traceback__))
    return ErrorResponse.make(f"internal error {eid} while generating; the server log has the details", 500,
                              code="internal_error")


def create_streaming_error_response(err: ErrorResponse) -> str:
    """An error as one SSE event (a stream's HTTP status is already 200 when it fails)."""
    return f"data: {json.dumps(err.model_dump())}\n\n"


_END = object()


async def _pump(agen: AsyncIterator, queue: asyncio.Queue) -> None:
    """Move `agen`'s items into `queue`, then an exception if it failed, then `_END`."""
    try:
        async for item in agen:
            queue.put_nowait(item)
    except Exception as exc:
        queue.put_nowait(exc)
    finally:
        queue.put_nowait(_END)


def _usage(turn: Turn) -> Usage:
    """OpenAI usage from the turn's ledger (`agent.turn.TokenLedger` defines the sums)."""
    t = turn.tokens
    return Usage(prompt_tokens=t.prompt_total, completion_tokens=t.completion,
                 total_tokens=t.prompt_total + t.completion,
                 completion_tokens_details={"reasoning_tokens": t.hidden})


class OpenAIServingChat:
    """Chat completions over the agent.

    Args:
        agent: the `Agent`.
        model_name: the one served model name.
        default_effort: reasoning_effort when a request names none.
        max_input_chars: longest message content accepted.
        index_status: returns the background index build's status dict while it is partial
            (added to each answer's metadata as ``index``), else None.
        admission: bounds on running and queued turns (default: 4 running, 16 queued).
        timeout_s: deadline of one request, queueing included (seconds).
        threads: `api.threads.ThreadStore` for ownership (None: threads are not checked).
    """

    def __init__(self, agent: Agent, model_name: str, default_effort: str = "auto", max_input_chars: int = 32_000,
                 index_status: Callable[[], dict | None] | None = None, admission: Admission | None = None,
                 timeout_s: float = 300.0, threads=None):
        self.agent = agent
        self.model_name = model_name
        self.default_effort = default_effort
        self.max_input_chars = max_input_chars
        self.index_status = index_status or (lambda: None)
        self.admission = admission or Admission(4, 16)
        self.timeout_s = timeout_s
        self.threads = threads

    def _metadata(self, turn: Turn) -> dict:
        meta = {"thread_id": turn.thread_id, "latency_s": round(turn.seconds, 3), **turn.metadata}
        status = self.index_status()
        if status is not None:
            meta["index"] = status
        return meta

    def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.model_name)])

    def _check(self, req: ChatCompletionRequest) -> ErrorResponse | None:
        if req.model is not None and req.model != self.model_name:
            return ErrorResponse.make(f"The model `{req.model}` does not exist. Available: {self.model_name}",
                                      404, param="model", code="model_not_found")
        for i, m in enumerate(req.messages):
            if len(m.text) > self.max_input_chars:
                return ErrorResponse.make(f"messages[{i}].content has {len(m.text)} characters; the limit is "
                                          f"{self.max_input_chars}", 400, param=f"messages.{i}.content",
                                          code="context_length_exceeded")
        policy = self.agent.context.policy
        prompt = len(policy.chat_prompt([{"role": m.role if m.role != "developer" else "system", "content": m.text}
                                         for m in req.messages]))
        limit = TokenBudget.split(req.token_limit, self.agent.context.config).total
        room = policy.max_context - PASSAGE_RESERVE - limit
        if prompt > room:
            return ErrorResponse.make(f"messages take {prompt} tokens; with max_completion_tokens={limit} and room for retrieved "
                                      f"passages the limit is {max(room, 0)} tokens", 400, param="messages",
                                      code="context_length_exceeded")
        return None

    async def _thread(self, req: ChatCompletionRequest, owner: str) -> str | None | ErrorResponse:
        """The thread to store this turn in (None: not stored), or 404 when it is another owner's."""
        tid = req.thread_id or (uuid.uuid4().hex if req.store else None)
        if tid is not None and self.threads is not None and not await self.threads.claim(tid, owner):
            return ErrorResponse.make(f"no thread {tid!r}", 404, param="thread_id", code="thread_not_found")
        return tid

    async def get_thread(self, thread_id: str, owner: str) -> ThreadOut | ErrorResponse:
        """The messages of a stored thread of `owner` (404 when there is none)."""
        if self.threads is None or await self.threads.owner_of(thread_id) != owner:
            return ErrorResponse.make(f"no thread {thread_id!r}", 404, param="thread_id", code="thread_not_found")
        return ThreadOut(id=thread_id, messages=[ThreadMessage(**m) for m in await self.agent.history(thread_id)])

    async def delete_thread(self, thread_id: str, owner: str) -> ThreadDeleted | ErrorResponse:
        """Delete a stored thread of `owner` (404 when there is none)."""
        if self.threads is None or not await self.threads.delete(thread_id, owner):
            return ErrorResponse.make(f"no thread {thread_id!r}", 404, param="thread_id", code="thread_not_found")
        return ThreadDeleted(id=thread_id)

    def _args(self, req: ChatCompletionRequest, thread_id: str | None) -> dict:
        return dict(messages=[{"role": m.role, "content": m.text} for m in req.messages], thread_id=thread_id,
                    effort=req.reasoning_effort or self.default_effort, max_tokens=req.token_limit,
                    temperature=req.temperature, top_p=req.top_p, seed=req.seed, samples=req.max_samples)

    def _overloaded(self) -> ErrorResponse:
        n = self.admission.retry_after()
        return ErrorResponse.make(f"the server is at capacity ({self.admission.max_running} running, "
                                  f"{self.admission.max_queued} queued); retry after {n} s", 429,
                                  type="rate_limit_error", code="server_overloaded", headers={"Retry-After": str(n)})

    async def create_chat_completion(self, req: ChatCompletionRequest, owner: str = "anonymous"
                                     ) -> ChatCompletionResponse | ErrorResponse | AsyncIterator[str]:
        """Answer `req` for `owner` (a key digest, `api.auth.Caller.owner`): a response, an SSE line
        iterator (stream=True), or an error value."""
        ticket = self.admission.admit()  # first, before any await: a burst is counted as it arrives
        if ticket is None:
            return self._overloaded()
        try:
            err = await asyncio.to_thread(self._check, req)  # tokenizing a long request stays off the event loop
            tid = await self._thread(req, owner) if err is None else err
        except BaseException:
            ticket.release()
            raise
        if isinstance(tid, ErrorResponse):
            ticket.release()
            return tid
        if req.stream:
            gen = self._stream(req, ticket, tid)
            weakref.finalize(gen, ticket.release)  # a stream never iterated still frees its place
            return gen
        try:
            async with asyncio.timeout(self.timeout_s):
                async with ticket:
                    turn = await self.agent.run(**self._args(req, tid))
        except Exception as exc:
            return create_error_response(exc)
        finally:
            ticket.release()
        metrics.observe_turn(turn)
        return ChatCompletionResponse(
            model=self.model_name,
            choices=[Choice(message=ResponseMessage(content=turn.answer, reasoning_content=turn.reasoning or None,
                                                    reasoning=turn.reasoning or None),
                            finish_reason=turn.finish_reason)],
            usage=_usage(turn),
            thinkgate=self._metadata(turn),
        )

    async def _stream(self, req: ChatCompletionRequest, ticket, tid: str | None) -> AsyncIterator[str]:
        cid, created = _cid(), int(time.time())
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        def chunk(delta: DeltaMessage, finish=None, **extra) -> str:
            c = ChatCompletionChunk(id=cid, created=created, model=self.model_name,
                                    choices=[ChunkChoice(delta=delta, finish_reason=finish)], **extra)
            return f"data: {c.model_dump_json(exclude_none=True)}\n\n"

        queue: asyncio.Queue = asyncio.Queue()
        pump = None
        try:
            yield chunk(DeltaMessage(role="assistant", content=""))
            async with asyncio.timeout_at(deadline):
                await ticket.__aenter__()
            # the agent's stream runs in its own task, so that leaving this generator (the client
            # hung up) or the deadline can cancel it at once: cancelling stops the backend's generation
            pump = asyncio.ensure_future(_pump(self.agent.stream(**self._args(req, tid)), queue))
            while True:
                item = await asyncio.wait_for(queue.get(), deadline - asyncio.get_running_loop().time())
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                kind, value = item
                if kind == "content":
                    yield chunk(DeltaMessage(content=value))
                elif kind == "reasoning":
                    yield chunk(DeltaMessage(reasoning_content=value, reasoning=value))
                elif kind == "done":
                    turn: Turn = value
                    metrics.observe_turn(turn)
                    meta = self._metadata(turn)
                    yield chunk(DeltaMessage(), finish=turn.finish_reason, thinkgate=meta)
                    if req.stream_options and req.stream_options.include_usage:
                        c = ChatCompletionChunk(id=cid, created=created, model=self.model_name, choices=[],
                                                usage=_usage(turn))
                        yield f"data: {c.model_dump_json(exclude_none=True)}\n\n"
        except Exception as exc:
            yield create_streaming_error_response(create_error_response(exc))
        finally:
            if pump is not None and not pump.done():
                pump.cancel()  # not awaited: a cancelled request cannot await; the task unwinds alone
            ticket.release()
        yield "data: [DONE]\n\n"


class DocumentServing:
    """Documents and search over the retriever (every call runs off the event loop)."""

    def __init__(self, retriever):
        self.retriever = retriever

    def _missing(self) -> ErrorResponse | None:
        if self.retriever is None:
            return ErrorResponse.make("this server runs without a document index", 503, code="no_index")
        return None

    async def add(self, doc: DocumentIn) -> DocumentOut | ErrorResponse:
        if err := self._missing():
            return err
        try:
            n = await asyncio.to_thread(self.retriever.add_text, doc.source, doc.text, doc.format)
        except ValueError as exc:
            return ErrorResponse.make(str(exc), 400, param="text")
        return DocumentOut(id=document_id(doc.source), source=doc.source, chunks=n)

    async def list(self) -> DocumentList | ErrorResponse:
        if err := self._missing():
            return err
        return DocumentList(data=await asyncio.to_thread(self.retriever.index.sources))

    async def _delete_source(self, source: str) -> DocumentOut:
        n = await asyncio.to_thread(self.retriever.delete, source)
        return DocumentOut(id=document_id(source), source=source, chunks=n)

    async def delete(self, doc_id: str) -> DocumentOut | ErrorResponse:
        """Delete the document with opaque id `doc_id` (404 when there is none)."""
        if err := self._missing():
            return err
        sources = await asyncio.to_thread(self.retriever.index.sources)
        match = next((d["source"] for d in sources if d["id"] == doc_id), None)
        if match is None:
            return ErrorResponse.make(f"no document with id {doc_id!r}", 404, param="id", code="not_found")
        return await self._delete_source(match)

    async def delete_source(self, source: str) -> DocumentOut | ErrorResponse:
        """Delete the document named exactly `source` (404 when there is none)."""
        if err := self._missing():
            return err
        if self.retriever.index.file_hash(source) is None:
            return ErrorResponse.make(f"no document with source {source!r}", 404, param="source", code="not_found")
        return await self._delete_source(source)

    async def search(self, q: str, k: int) -> SearchResponse | ErrorResponse:
        if err := self._missing():
            return err
        try:
            hits = await self.retriever.asearch(q, k)
        except ValueError as exc:
            return ErrorResponse.make(str(exc), 400, param="q")
        return SearchResponse(query=q, data=[SearchHit(**h.to_dict()) for h in hits])
