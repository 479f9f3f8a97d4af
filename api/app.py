"""The FastAPI app: routes that only map serving results to HTTP, plus error handlers that
turn every failure into OpenAI's error shape.

Contract: `create_app(settings, policy=None, retriever=None)` builds the app; at start-up it
loads what was not injected (the policy from the registry, the retriever on the index dir),
opens the threads' checkpointer (SQLite, or PostgreSQL with ``THINKGATE_DATABASE_URL``: then the
chunk store is there too and any number of replicas serve the same threads and documents) and
builds the agent. Tests inject tiny or mock components.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.config import AgentConfig, calibration_mismatch
from agent.runner import Agent
from api import metrics
from api.admission import Admission
from api.auth import APIError, Caller, KeyAuth, parse_keys
from api.page import mount_page
from api.threads import ThreadStore, open_threads
from api.protocol import (ChatCompletionRequest, ChatCompletionResponse, DocumentIn, DocumentList, DocumentOut,
                          ErrorBody, ErrorResponse, Health, ModelList, SearchResponse, ThreadDeleted,
                          ThreadOut)
from api.serving import DocumentServing, OpenAIServingChat
from api.settings import Settings

log = logging.getLogger("thinkgate.api")


def _error(err: ErrorResponse) -> JSONResponse:
    return JSONResponse(err.model_dump(), status_code=err.status_code, headers=err.headers or None)


def _result(res, status_code: int = 200):
    if isinstance(res, ErrorResponse):
        return _error(res)
    return JSONResponse(res.model_dump(exclude_none=False), status_code=status_code)


_WHY = {400: "invalid request (OpenAI's error shape; never 422)", 401: "missing or wrong API key",
        403: "admin key required", 404: "no such model, thread or document", 429: "at capacity; see Retry-After",
        500: "internal error (an id that is in the server log)", 502: "the remote policy server failed",
        503: "component unavailable",
        504: "deadline exceeded"}


def _responses(ok: int, model, *errors: int, stream: bool = False) -> dict:
    """OpenAPI responses of a route: its success schema and the errors it can return."""
    out: dict = {ok: {"model": model}}
    if stream:
        out[ok]["content"] = {"text/event-stream": {"schema": {"type": "string"},
                                                    "description": "stream=true: SSE chunks, then data: [DONE]"}}
    for code in errors:
        out[code] = {"model": ErrorBody, "description": _WHY[code]}
    return out


def _without_422(app: FastAPI) -> dict:
    """The app's OpenAPI schema with FastAPI's automatic 422 removed: validation errors are 400."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for ops in spec.get("paths", {}).values():
            for op in ops.values():
                op.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            spec.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = spec
    return app.openapi_schema


async def _listen_for_disconnect(request: Request) -> None:
    """Return once the client has hung up (the request body was already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_disconnected(request: Request, coro):
    """Await `coro`, cancelling it when the client disconnects first (its generation stops in the
    backend); then the result is an error value nobody reads. Streams stop on their own: leaving
    the SSE iterator closes the agent's stream."""
    work = asyncio.ensure_future(coro)
    watch = asyncio.ensure_future(_listen_for_disconnect(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not work.done():
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return ErrorResponse.make("the client closed the connection", 499, code="client_closed_request")
    return work.result()


async def _expire_threads(threads: ThreadStore, ttl_s: float) -> None:
    """Delete expired threads now and then every ttl/4 (at most every 10 minutes)."""
    if ttl_s <= 0:
        return
    while True:
        try:
            n = await threads.expire(ttl_s)
            if n:
                log.info("deleted %d threads unused for %.0f s", n, ttl_s)
        except Exception:
            log.exception("thread expiry failed")
        await asyncio.sleep(min(ttl_s / 4, 600.0))


def create_app(settings: Settings | None = None, *, policy=None, retriever=None, agent_config=None,
               indexing=None) -> FastAPI:
    """Build the app. Components given here are used as they are; missing ones load at start-up.

    `indexing`: a `retrieval.background.BackgroundIngest` to start and report (else one over the
    demo corpus when ``settings.demo_index``)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal policy, retriever, indexing
        if policy is None:
            from policy.models import load_policy

            policy = load_policy(settings.model, settings.cache_dir, backend=settings.backend,
                                 remote_url=settings.remote_url, served_name=settings.served_model_name,
                                 precision=settings.precision, device=settings.device,
                                 cache_slots=settings.cache_slots)
        if retriever is None:
            from retrieval.retriever import Retriever

            retriever = Retriever(settings.resolved_index_dir, settings.embedder, **settings.retriever_options())
        if indexing is not None:
            indexing.start()
        elif settings.demo_index and retriever is not None:  # answer at once; the demo index fills in behind
            from retrieval.background import BackgroundIngest
            from retrieval.demo import demo_corpus

            indexing = BackgroundIngest(retriever, [demo_corpus(settings.cache_dir)]).start()
        app.state.indexing = indexing

        def index_status() -> dict | None:
            return indexing.status().to_dict() if indexing is not None and indexing.partial else None
        from policy.models import resolve_policy

        cfg = agent_config
        if cfg is None:
            model_dir = None
            with contextlib.suppress(Exception):
                model_dir = resolve_policy(settings.model, settings.cache_dir)
            cfg = AgentConfig.for_model(model_dir, tau_think=settings.tau_think, tau_exit=settings.tau_exit)
            if settings.tau_think is None:
                calibration_mismatch(model_dir, policy.backend, policy.weights)
        async with open_threads(settings) as (saver, threads):
            agent = Agent(policy, retriever, cfg, checkpointer=saver)
            app.state.chat = OpenAIServingChat(
                agent, settings.served_model_name or policy.name, settings.reasoning_effort,
                settings.max_input_chars, index_status,
                admission=Admission(settings.max_running_requests, settings.max_queued_requests),
                timeout_s=settings.request_timeout_s, threads=threads)
            expiry = asyncio.ensure_future(_expire_threads(threads, settings.thread_ttl_s))
            app.state.docs = DocumentServing(retriever)
            app.state.policy, app.state.retriever = policy, retriever
            log.info("thinkgate ready: model=%s backend=%s weights=%s chunks=%s%s tau_think=%s", policy.name,
                     policy.backend, policy.weights, len(retriever) if retriever is not None else 0,
                     " (demo index building in the background)" if indexing is not None else "", cfg.tau_think)
            try:
                yield
            finally:
                expiry.cancel()
                await policy.close()

    app = FastAPI(title="thinkgate", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible chat over documents with an entropy-gated thinking agent.")

    auth = KeyAuth(parse_keys(settings.api_keys), parse_keys(settings.admin_api_keys))

    def caller(request: Request) -> Caller:
        return auth.check(request.headers.get("authorization"))

    def admin(request: Request) -> Caller:
        return auth.check(request.headers.get("authorization"), admin=True)

    def ops(request: Request) -> None:
        if settings.protect_health:
            auth.check(request.headers.get("authorization"))

    if settings.cors_origins.strip():
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=sorted(parse_keys(settings.cors_origins)),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return _error(exc.error)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        if first.get("type") == "json_invalid":
            loc = []
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return _error(ErrorResponse.make(f"{'.'.join(loc) + ': ' if loc else ''}{msg}", 400,
                                         param=".".join(loc) or None, code=first.get("type")))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Allow lists every method of the path (Starlette names one route's)
            from starlette.routing import Match

            allowed = set()
            for route in request.app.routes:
                if route.matches(request.scope)[0] != Match.NONE:
                    allowed |= set(getattr(route, "methods", None) or ())
            headers["Allow"] = ", ".join(sorted(allowed))
        return _error(ErrorResponse.make(str(exc.detail), exc.status_code, headers=headers))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error")
        return _error(ErrorResponse.make("internal server error; see the server log", 500))

    @app.post("/v1/chat/completions", responses=_responses(200, ChatCompletionResponse, 400, 401, 404, 429, 500, 502, 504,
                                                           stream=True))
    async def chat_completions(req: ChatCompletionRequest, request: Request, who: Caller = Depends(caller)):
        res = await _unless_disconnected(request, request.app.state.chat.create_chat_completion(req, who.owner))
        if isinstance(res, ErrorResponse):
            return _error(res)
        if req.stream:
            return StreamingResponse(res, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return _result(res)

    @app.get("/v1/threads/{thread_id}", responses=_responses(200, ThreadOut, 400, 401, 404))
    async def get_thread(thread_id: str, request: Request, who: Caller = Depends(caller)):
        return _result(await request.app.state.chat.get_thread(thread_id, who.owner))

    @app.delete("/v1/threads/{thread_id}", responses=_responses(200, ThreadDeleted, 400, 401, 404))
    async def delete_thread(thread_id: str, request: Request, who: Caller = Depends(caller)):
        return _result(await request.app.state.chat.delete_thread(thread_id, who.owner))

    @app.get("/v1/models", responses=_responses(200, ModelList, 401))
    async def models(request: Request, who: Caller = Depends(caller)):
        return _result(request.app.state.chat.models())

    @app.post("/v1/documents", status_code=201, responses=_responses(201, DocumentOut, 400, 401, 403, 503))
    async def add_document(doc: DocumentIn, request: Request, who: Caller = Depends(admin)):
        return _result(await request.app.state.docs.add(doc), 201)

    @app.get("/v1/documents", responses=_responses(200, DocumentList, 401, 503))
    async def list_documents(request: Request, who: Caller = Depends(caller)):
        return _result(await request.app.state.docs.list())

    @app.delete("/v1/documents/{doc_id}", responses=_responses(200, DocumentOut, 400, 401, 403, 404, 503))
    async def delete_document(request: Request, doc_id: str = Path(pattern=r"^doc_[0-9a-f]{24}$"),
                              who: Caller = Depends(admin)):
        return _result(await request.app.state.docs.delete(doc_id))

    @app.delete("/v1/documents", responses=_responses(200, DocumentOut, 400, 401, 403, 404, 503))
    async def delete_document_by_source(request: Request, source: str = Query(min_length=1, max_length=512),
                                        who: Caller = Depends(admin)):
        return _result(await request.app.state.docs.delete_source(source))

    @app.get("/v1/search", responses=_responses(200, SearchResponse, 400, 401, 503))
    async def search(request: Request, q: str = Query(min_length=1, max_length=2000),
                     k: int = Query(5, ge=1, le=100), who: Caller = Depends(caller)):
        return _result(await request.app.state.docs.search(q, k))

    @app.get("/healthz", dependencies=[Depends(ops)], responses=_responses(200, Health, 401, 503))
    async def healthz(request: Request):
        try:
            ph = await request.app.state.policy.health()
        except Exception as exc:
            return JSONResponse({"status": "error", "error": str(exc)}, status_code=503)
        r = request.app.state.retriever
        status = getattr(getattr(r, "index", None), "status", None)
        store = await asyncio.to_thread(status) if status else None  # a refresh may fetch new vectors
        chunks = store["chunks"] if store else (await asyncio.to_thread(len, r) if r is not None else 0)
        body = {"status": "ok", "policy": ph, "chunks": chunks, "store": store}
        indexing = getattr(request.app.state, "indexing", None)
        if indexing is not None:
            body["index"] = indexing.status().to_dict()
        return body

    @app.get("/metrics", dependencies=[Depends(ops)], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}, 401: {"model": ErrorBody}})
    async def prometheus():
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    mount_page(app)
    app.openapi = lambda: _without_422(app)
    return app
