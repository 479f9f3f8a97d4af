"""The ``thinkgate`` command line (typer).

Commands: ``serve`` (the API), ``ingest`` (index files and folders), ``search`` (query the
index), ``prepare`` (models, and with --demo the demo index), ``train`` (``--stage sft``:
`training.sft`; ``--stage grpo``: `training.grpo`), ``eval`` (see `evals.modes`),
``demo-corpus`` (print its folder).
Bad input exits non-zero with a one-line ``error: …`` message; nothing already indexed is lost.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="thinkgate: answers over your documents, thinking only when the model is unsure.")

IndexOpt = typer.Option(None, "--index", help="index dir (default: $THINKGATE_INDEX_DIR or <cache>/index)")


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _settings(**kw):
    from pydantic import ValidationError

    from api.settings import Settings

    try:
        return Settings(**{k: v for k, v in kw.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        _fail(f"{'.'.join(map(str, err['loc']))}: {str(err['msg']).removeprefix('Value error, ')}")


def _check_database(url: str | None) -> None:
    """Fail in one line, before anything binds or loads, when THINKGATE_DATABASE_URL cannot be reached."""
    if not url:
        return
    import psycopg

    from retrieval.pgstore import redact

    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.Error as exc:
        _fail(f"cannot reach PostgreSQL at {redact(url)}: {str(exc).strip().splitlines()[0]}")


def _retriever(index: Optional[Path], embedder: Optional[str] = None):
    from retrieval.index import IndexMismatchError
    from retrieval.retriever import Retriever

    s = _settings(index_dir=index, embedder=embedder)
    _check_database(s.database_url)
    try:
        return Retriever(s.resolved_index_dir, s.embedder, **s.retriever_options())
    except (IndexMismatchError, LookupError) as exc:
        _fail(str(exc))


@app.command()
def serve(model: Optional[str] = typer.Option(None, help="registered name, checkpoint dir or hub id"),
          index: Optional[Path] = IndexOpt,
          host: Optional[str] = typer.Option(None, envvar="HOST", help="bind address [default: 127.0.0.1]"),
          port: Optional[int] = typer.Option(None, envvar="PORT", help="port [default: 8000]"),
          device: Optional[str] = typer.Option(None, help="torch device for the policy"),
          demo: bool = typer.Option(False, "--demo", help="build (or resume) the demo index in the background "
                                                          "while answering"),
          log_level: str = typer.Option("info", help="uvicorn log level")):
    """Start the OpenAI-compatible API."""
    import logging

    import uvicorn

    from api.app import create_app
    from policy.fetch import PrepareError
    from policy.models import ModelNotFoundError, resolve_policy

    s = _settings(model=model, index_dir=index, host=host, port=port, device=device)
    if demo:
        s.demo_index = True
    try:
        resolve_policy(s.model, s.cache_dir, log=typer.echo)  # fail fast, before the server binds
    except (ModelNotFoundError, PrepareError) as exc:
        _fail(str(exc))
    _check_database(s.database_url)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from retrieval.pgstore import redact

    store = f"PostgreSQL {redact(s.database_url)} (FAISS cache {s.resolved_index_dir})" if s.database_url \
        else str(s.resolved_index_dir)
    typer.echo(f"thinkgate: model {s.model}, index {store}, http://{s.host}:{s.port}")
    uvicorn.run(create_app(s), host=s.host, port=s.port, log_level=log_level)


@app.command()
def ingest(paths: list[Path] = typer.Argument(..., help="files or folders (.md .rst .rst.txt .txt .html)"),
           index: Optional[Path] = IndexOpt,
           quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar")):
    """Index documents; unchanged files are skipped on a re-run."""
    for p in paths:
        if not p.exists():
            _fail(f"no such file or folder: {p}")
    r = _retriever(index)
    rep = r.ingest(paths, progress=not quiet)
    typer.echo(f"{rep.files_seen} files: {rep.files_indexed} indexed, {rep.files_skipped} unchanged, "
               f"{len(rep.files_failed)} failed; {rep.chunks_added} chunks added in {rep.seconds:.1f}s; "
               f"index has {len(r)} chunks")
    for f in rep.files_failed:
        typer.echo(f"  failed: {f}", err=True)


@app.command("copy-index")
def copy_index(to: Optional[str] = typer.Option(None, "--to", help="postgresql://… [default: $THINKGATE_DATABASE_URL]"),
               index: Optional[Path] = IndexOpt):
    """Copy a SQLite index (texts, metadata, embeddings: no re-embedding) into PostgreSQL, where API
    replicas share it. Sources already there unchanged are skipped, so an interrupted copy resumes."""
    from retrieval.store import IndexMismatchError, copy_sqlite_index, is_postgres_url

    s = _settings(index_dir=index)
    url = to or s.database_url
    if not is_postgres_url(url):
        _fail("give the PostgreSQL URL with --to postgresql://… (or THINKGATE_DATABASE_URL)")
    _check_database(url)
    try:
        copied, skipped, chunks = copy_sqlite_index(
            s.resolved_index_dir, url, on_progress=lambda d, n: typer.echo(f"\r{d}/{n} sources", nl=False))
    except FileNotFoundError:
        _fail(f"no SQLite index at {s.resolved_index_dir}: build one with `thinkgate ingest PATH --index DIR`")
    except IndexMismatchError as exc:
        _fail(str(exc))
    typer.echo(f"\ncopied {copied} sources ({skipped} already there); the store has {chunks} chunks")


@app.command()
def search(query: str = typer.Argument(..., help="what to look for"),
           k: int = typer.Option(5, "--k", "-k", min=1, max=100, help="passages to return"),
           as_json: bool = typer.Option(False, "--json", help="print JSON"),
           mode: Optional[str] = typer.Option(None, help="hybrid (default), dense or lexical"),
           index: Optional[Path] = IndexOpt):
    """Print the passages that best match QUERY: source, heading, cosine score, text."""
    if mode is not None and mode not in ("hybrid", "dense", "lexical"):
        _fail(f"--mode must be hybrid, dense or lexical, got {mode!r}")
    if not query.strip():
        _fail("query is empty")
    r = _retriever(index)
    if len(r) == 0:
        _fail(f"the index at {r.index.dir} is empty: run `thinkgate ingest PATH` first")
    hits = r.search(query, k, mode=mode)
    if as_json:
        typer.echo(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.panel import Panel

    con = Console()
    for i, h in enumerate(hits, 1):
        con.print(Panel(h.text, title=f"[{i}] {h.score:.3f}  {h.heading}", subtitle=h.source, title_align="left"))


@app.command()
def prepare(model: Optional[str] = typer.Option(None, help="policy model to prepare"),
            demo: bool = typer.Option(False, "--demo", help="also build the demo index, or resume a partial one (indexed files are skipped)"),
            index: Optional[Path] = IndexOpt):
    """Prepare the models (dequantize the default policy and export it and the query embedder to
    ONNX, once) and optionally the demo index."""
    from policy.fetch import PrepareError
    from policy.models import ModelNotFoundError, default_precision, resolve_policy

    s = _settings(model=model, index_dir=index)
    try:
        path = resolve_policy(s.model, s.cache_dir, log=typer.echo)
        typer.echo(f"policy   {s.model}: {path}")
        from policy.models import default_backend

        if (default_backend() if s.backend == "auto" else s.backend) == "onnx":
            from policy.onnx_backend import export_onnx

            prec = s.precision or default_precision(s.model)
            try:
                exp = export_onnx(path, prec, s.cache_dir, log=typer.echo)
            except RuntimeError as exc:
                raise PrepareError("export", str(exc).splitlines()[0]) from exc
            typer.echo(f"onnx     {prec}: {exp}")
        from retrieval.embedder import Embedder

        emb = Embedder(s.embedder)  # exports the query path to ONNX once; LookupError names a missing package
        typer.echo(f"embedder {s.embedder}: {emb.path} (queries: {emb.query_model or 'torch'})")
    except (ModelNotFoundError, LookupError, PrepareError) as exc:
        _fail(str(exc))
    if demo:
        r = _retriever(index)
        from retrieval.demo import demo_corpus

        corpus = demo_corpus(s.cache_dir)
        # files already indexed with the same sha256 are skipped: this resumes a build that `serve --demo`
        # (or an earlier prepare) left partial, and costs one hash per file when it is complete
        verb = f"resuming ({len(r)} chunks so far)" if len(r) else "building"
        typer.echo(f"demo index: {verb} from {corpus}")
        rep = r.ingest([corpus])
        typer.echo(f"demo index: {rep.files_indexed} files, {rep.chunks_added} chunks in {rep.seconds:.0f}s")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def train(ctx: typer.Context):
    """Training: ``--stage sft`` (the dual-mode warm-up, `python -m training.sft`) or ``--stage grpo``
    (default, `python -m training.grpo`), then that script's own flags (e.g. --config RECIPE)."""
    args = list(ctx.args)
    stage = "grpo"
    if "--stage" in args:
        i = args.index("--stage")
        if i + 1 >= len(args) or args[i + 1] not in ("sft", "grpo"):
            _fail("--stage must be sft or grpo")
        stage = args[i + 1]
        del args[i: i + 2]
    if stage == "sft":
        from training.sft import main as stage_main  # the CLI only dispatches; training owns the logic
    else:
        from training.grpo import main as stage_main
    stage_main(args)


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def eval_cmd(ctx: typer.Context):
    """Evaluation: the same flags as `python -m evals.modes` (forced modes, learned/gated/oracle, calibration)."""
    from evals.modes import main as eval_main

    eval_main(list(ctx.args))


@app.command("demo-corpus")
def demo_corpus_cmd():
    """Print the folder of the demo corpus (the Python documentation)."""
    from retrieval.demo import demo_corpus

    typer.echo(str(demo_corpus(_settings().cache_dir)))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
