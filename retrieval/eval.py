"""``python -m retrieval.eval``: does the retriever find the right page?

Contract:
- Three question sets, n = 427 in all:
  * ``faq`` (68, not written by us): every question of the Python FAQ (``faq/*.rst``) whose
    answer names a library page (``:mod:``, ``:func:``, ``:meth:``, ``:class:``, ``:exc:`` …
    references, mapped to ``library/<module>.rst``, built-ins to ``functions``/``stdtypes``,
    exceptions to ``exceptions``); searched in the index with the FAQ pages deleted (a copy), so
    the question's own page cannot answer it — the held-out set of issue 10 (dense 0.397 there).
  * ``written`` (187): ``retrieval/data/questions.jsonl`` (167 questions phrased as users ask them,
    written from the question side — the question first, the page looked up after) plus the
    agent's docs QA set (``tasks/data/docs_qa.jsonl``, 20); searched in the whole index.
  * ``task`` (172): ``retrieval/data/questions_task.jsonl``, written later in one pass from the
    task side ("How can I pause my program for half a second?" → ``library/time``): what the user
    wants done, most without the module's name (152 of 172 name no word of a gold page), every
    page that answers it as gold; searched in the whole index.
  A page matches when an indexed source path ends with the gold path.
- Retrievers, all over the same index: ``dense`` (FAISS cosine), ``lexical`` (FTS5 BM25),
  ``hybrid`` (reciprocal-rank fusion) and ``hybrid+diversity`` (fusion, then the same-page decay),
  each through `Retriever.search`; and the baseline of issue 10, ``dense, text only``: the same
  passages embedded without their heading path, as the index embedded them before (`TextOnlyDense`).
- Metrics per retriever: recall@1/5/20 (a gold page among the top k passages' pages) with 95 %
  Wilson intervals, MRR@20 (1 / rank of the first gold page) with a 95 % bootstrap interval, query
  latency p50 (ms); and each retriever against ``dense`` and against ``dense, text only`` at
  recall@5, paired (difference with a 95 % interval, exact McNemar p).
- Fusion settings: before any set is searched, hybrid recall@5 is measured on a development set
  built the same way from the glossary (`glossary_questions`, searched without the glossary page)
  over a pre-registered grid of (lexical weight, same-page decay) (`GRID`, `tune`, `pick`); the
  picked setting is evaluated as ``hybrid+dev-tuned`` beside the defaults.
- ``--database-url postgresql://…``: the same with the chunk store in PostgreSQL (copies of the index
  in ``thinkgate_eval_*`` schemas of that database, dropped afterwards).
- Writes ``results.json``, ``table-*.md`` and ``dev-grid.md`` under ``--out``. Raises
  `FileNotFoundError` when the index does not exist (build it with ``thinkgate ingest <docs> --index DIR``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).parent / "data" / "questions.jsonl"
TASK = Path(__file__).parent / "data" / "questions_task.jsonl"
DOCS_QA = Path(__file__).parents[1] / "tasks" / "data" / "docs_qa.jsonl"
#: name → (mode, source_decay)
RETRIEVERS = {"dense": ("dense", 1.0), "lexical": ("lexical", 1.0), "hybrid": ("hybrid", 1.0),
              "hybrid+diversity": ("hybrid", 0.5)}
KS = (1, 5, 20)


def load_questions(paths: tuple[Path, ...] = (DATA, DOCS_QA)) -> list[dict]:
    """The questions of `paths` (default: the written set) as {id, question, sources}."""
    out = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                out.append({"id": d["id"], "question": d["question"], "sources": d["sources"]})
    return out


ROLE = re.compile(r":(mod|func|meth|class|exc|data|attr|const):`[~!]?(?:[^`<]*<)?([\w.]+)>?`")
_STDTYPES = {"str", "bytes", "bytearray", "list", "dict", "set", "frozenset", "tuple", "int", "float", "complex",
             "range", "memoryview", "object"}


def _page_of(role: str, name: str, library: set[str]) -> str | None:
    """The library page a reST cross-reference points to (None when it is not a library page)."""
    import builtins

    if role == "exc":
        return "library/exceptions.rst.txt"
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        mod = ".".join(parts[:i])
        if mod in library and mod not in ("functions", "stdtypes", "exceptions", "constants"):
            return f"library/{mod}.rst.txt"
    if parts[0] in _STDTYPES and len(parts) > 1:
        return "library/stdtypes.rst.txt"
    if parts[0] in _STDTYPES or callable(getattr(builtins, parts[0], None)):
        return "library/functions.rst.txt"
    return None


def faq_questions(docs: Path) -> list[dict]:
    """The FAQ questions of a Python documentation source tree (``docs`` holds ``faq/`` and
    ``library/``) whose answers name library pages: [{id, question, sources}] (see the module
    docstring). Headings are reST titles (a line, then an underline at least as long)."""
    library = {p.name[: -len(".rst.txt")] for p in (docs / "library").glob("*.rst.txt")}
    out = []
    for f in sorted((docs / "faq").glob("*.rst.txt")):
        lines = f.read_text(encoding="utf-8").splitlines()
        heads = [i for i in range(len(lines) - 1) if lines[i].strip()
                 and re.fullmatch(r"([=\-~^\"'`#*+])\1{2,}", lines[i + 1].strip())
                 and len(lines[i + 1].strip()) >= len(lines[i].strip())]
        for j, h in enumerate(heads):
            title = lines[h].strip()
            if not title.endswith("?"):
                continue
            body = "\n".join(lines[h + 2: heads[j + 1] if j + 1 < len(heads) else len(lines)])
            pages: list[str] = []
            for role, name in ROLE.findall(body):
                page = _page_of(role, name, library)
                if page and page not in pages:
                    pages.append(page)
            if pages:
                out.append({"id": f"faq-{f.name.split('.')[0]}-{h}", "question": title, "sources": pages})
    return out


def glossary_questions(docs: Path) -> list[dict]:
    """A development set built like the FAQ set but disjoint from it: every glossary term
    (``glossary.rst.txt``) whose definition names library pages, asked as "What is <term> in
    Python?", gold = those pages: [{id, question, sources}]. Searched in an index copy without the
    glossary page; used only to choose the fusion settings before the FAQ set is looked at."""
    library = {p.name[: -len(".rst.txt")] for p in (docs / "library").glob("*.rst.txt")}
    entries: list[tuple[str, list[str]]] = []
    for line in (docs / "glossary.rst.txt").read_text(encoding="utf-8").splitlines():
        if re.match(r"^   \S", line):  # a term (3 spaces in); its definition is indented further
            entries.append((line.strip(), []))
        elif entries and line.startswith("      "):
            entries[-1][1].append(line)
    out = []
    for i, (term, body) in enumerate(entries):
        pages: list[str] = []
        for role, name in ROLE.findall("\n".join(body)):
            page = _page_of(role, name, library)
            if page and page not in pages:
                pages.append(page)
        term = term.strip("`").strip()
        if pages and term:
            out.append({"id": f"glossary-{i}", "question": f"What is {term} in Python?", "sources": pages})
    return out


def first_hit(sources: list[str], gold: list[str]) -> int | None:
    """1-based rank of the first source that is a gold page, or None.

    >>> first_hit(["/x/library/os.rst.txt", "/x/library/copy.rst.txt"], ["library/copy.rst.txt"])
    2
    """
    for r, s in enumerate(sources, 1):
        if any(s == g or s.endswith("/" + g) for g in gold):
            return r
    return None


def bootstrap_mean(xs: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of `xs`."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(xs, k=len(xs))) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


class TextOnlyDense:
    """Dense search over the passages of `retriever`'s index embedded without their heading path
    (`Chunk.embed_text` before issue 10: the text alone), in an in-memory FAISS inner-product
    index: the baseline issue 10's target is stated against. ``search(query, k, mode, source_decay)``
    takes `Retriever.search`'s arguments and ignores the last two."""

    name = "dense, text only"

    def __init__(self, retriever, batch: int = 1000):
        import faiss
        import numpy as np

        self.retriever = retriever
        self.passages = list(retriever.index.iter_chunks(batch))
        vecs = retriever.embedder.encode([p.text for p in self.passages])
        self.faiss = faiss.IndexFlatIP(vecs.shape[1])
        self.faiss.add(np.ascontiguousarray(vecs, dtype=np.float32))

    def search(self, query: str, k: int = 5, mode: str | None = None, source_decay: float | None = None):
        """Top-`k` passages by cosine of the query and the text-only embedding, best first."""
        import dataclasses

        scores, ids = self.faiss.search(self.retriever.embedder.encode_query(query)[None], k)
        return [dataclasses.replace(self.passages[i], score=float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]


def evaluate(retriever, questions: list[dict], k_max: int = 20, extra: dict | None = None,
             baseline: TextOnlyDense | None = None) -> dict:
    """Per-retriever metrics and per-question ranks (see the module docstring); `extra`: more
    retrievers as name → (mode, source_decay, lexical_weight); `baseline`: the text-only dense
    search, run first and compared against like ``dense``."""
    from evals.stats import paired, wilson

    ranks: dict[str, list[int | None]] = {}
    out: dict = {"n": len(questions), "retrievers": {}}
    runs = {name: (mode, decay, 1.0) for name, (mode, decay) in RETRIEVERS.items()} | (extra or {})
    if baseline is not None:
        runs = {baseline.name: ("dense", 1.0, 1.0)} | runs
    for name, (mode, decay, weight) in runs.items():
        retriever.lexical_weight = weight
        search = baseline.search if baseline is not None and name == baseline.name else retriever.search
        rs, ms = [], []
        for q in questions:
            t0 = time.perf_counter()
            hits = search(q["question"], k_max, mode=mode, source_decay=decay)
            ms.append((time.perf_counter() - t0) * 1000)
            rs.append(first_hit([h.source for h in hits], q["sources"]))
        ranks[name] = rs
        n = len(rs)
        row: dict = {"latency_ms_p50": statistics.median(ms)}
        for k in KS:
            hit = sum(1 for r in rs if r is not None and r <= k)
            lo, hi = wilson(hit, n)
            row[f"recall@{k}"] = {"value": hit / n, "ci_low": lo, "ci_high": hi}
        rr = [1.0 / r if r is not None else 0.0 for r in rs]
        lo, hi = bootstrap_mean(rr)
        row["mrr@20"] = {"value": statistics.fmean(rr), "ci_low": lo, "ci_high": hi}
        out["retrievers"][name] = row
    retriever.lexical_weight = 1.0

    def at5(name: str) -> list[dict]:
        return [{"id": q["id"], "score": float(r is not None and r <= 5)} for q, r in zip(questions, ranks[name])]

    for name in runs:
        out["retrievers"][name]["vs_dense_recall@5"] = paired(at5(name), at5("dense"))
        if baseline is not None:
            out["retrievers"][name]["vs_text_only_recall@5"] = paired(at5(name), at5(baseline.name))
    out["ranks"] = {name: rs for name, rs in ranks.items()}
    out["ids"] = [q["id"] for q in questions]
    return out


def table(res: dict) -> str:
    """Markdown table of `evaluate`'s result."""
    text_only = any("vs_text_only_recall@5" in r for r in res["retrievers"].values())
    head = "| retriever | recall@1 | recall@5 | recall@20 | MRR@20 | Δ recall@5 vs dense | McNemar p |"
    lines = [f"n = {res['n']} questions; 95 % intervals (Wilson for recall, bootstrap for MRR); "
             "Δ = paired difference in recall@5, exact McNemar p; ``dense, text only`` = the same passages "
             "embedded without their heading path (the index before issue 10).", "",
             head + (" Δ recall@5 vs dense, text only | McNemar p |" if text_only else "") + " p50 ms |",
             "|---|---|---|---|---|---|---|" + ("---|---|" if text_only else "") + "---|"]

    def cell(m):
        return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"

    def delta(d):
        return f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {d['mcnemar_p']:.2g}"

    for name, r in res["retrievers"].items():
        lines.append(f"| {name} | {cell(r['recall@1'])} | {cell(r['recall@5'])} | {cell(r['recall@20'])} | "
                     f"{cell(r['mrr@20'])} | {delta(r['vs_dense_recall@5'])} | "
                     + (f"{delta(r['vs_text_only_recall@5'])} | " if text_only else "")
                     + f"{r['latency_ms_p50']:.1f} |")
    return "\n".join(lines) + "\n"


def with_search_path(url: str, schema: str) -> str:
    """`url` with its tables in PostgreSQL schema `schema` (a libpq ``options`` parameter).

    >>> with_search_path("postgresql://u@h/db", "s1")
    'postgresql://u@h/db?options=-csearch_path%3Ds1'
    """
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def without(index_dir: Path, work: Path, marker: str | None, database_url: str | None = None):
    """A `Retriever` over a copy of the SQLite index `index_dir` with every source whose path holds
    `marker` deleted (None: none). With `database_url` the copy is a PostgreSQL store in its own
    schema ``thinkgate_eval_<marker>`` of that database (made afresh by `copy_store`; the caller drops
    it with `drop_schemas`), so the evaluation measures the PostgreSQL store's ranking."""
    from retrieval.retriever import Retriever

    tag = re.sub(r"\W", "", marker or "all")
    copy = work / ("index-without-" + tag)
    if database_url is None:
        shutil.copytree(index_dir, copy)
        r = Retriever(copy)
    else:
        import psycopg

        from retrieval.store import copy_sqlite_index

        schema = f"thinkgate_eval_{tag}"
        with psycopg.connect(database_url, autocommit=True) as con:
            con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            con.execute(f"CREATE SCHEMA {schema}")
        url = with_search_path(database_url, schema)
        copy_sqlite_index(index_dir, url)
        r = Retriever(copy, database_url=url, refresh_s=0.0)
    for d in r.index.sources():
        if marker and marker in d["source"]:
            r.delete(d["source"])
    return r


def drop_schemas(database_url: str) -> None:
    """Drop the ``thinkgate_eval_*`` schemas `without` made."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as con:
        for (name,) in con.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'thinkgate_eval_%'").fetchall():
            con.execute(f"DROP SCHEMA {name} CASCADE")


def without_faq(index_dir: Path, work: Path, database_url: str | None = None):
    """A `Retriever` over a copy of `index_dir` with every ``/faq/`` source deleted."""
    return without(index_dir, work, "/faq/", database_url)


#: the pre-registered grid of `tune`: (lexical weight, same-page decay); defaults first
GRID = [(w, d) for w in (1.0, 0.5, 2.0) for d in (0.5, 0.3, 0.7, 1.0)]


def tune(retriever, questions: list[dict], k: int = 5) -> list[dict]:
    """Recall@`k` of hybrid search at every (lexical_weight, source_decay) of `GRID` on a development
    set: [{lexical_weight, source_decay, recall, hits}], in grid order. The choice (`pick`) is made
    here, before the test set is searched."""
    rows = []
    for w, d in GRID:
        retriever.lexical_weight = w
        hits = sum(1 for q in questions
                   if first_hit([h.source for h in retriever.search(q["question"], k, mode="hybrid", source_decay=d)],
                                q["sources"]) is not None)
        rows.append({"lexical_weight": w, "source_decay": d, "recall": hits / len(questions), "hits": hits})
    retriever.lexical_weight = 1.0
    return rows


def pick(rows: list[dict]) -> dict:
    """The grid point with the most hits; ties go to the earlier point (the defaults come first).

    >>> pick([{"hits": 3, "n": 0}, {"hits": 4, "n": 1}, {"hits": 4, "n": 2}])["n"]
    1
    """
    best = max(r["hits"] for r in rows)
    return next(r for r in rows if r["hits"] == best)


def main(argv: list[str] | None = None) -> dict:
    """Parse arguments, evaluate both sets, write results; see the module docstring."""
    import sys

    ap = argparse.ArgumentParser(prog="python -m retrieval.eval", description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, help="index dir over the Python documentation (the demo index)")
    ap.add_argument("--docs", default=None, help="the documentation source tree (default: the demo corpus)")
    ap.add_argument("--out", default="docs/results/retrieval-eval")
    ap.add_argument("--database-url", default=None,
                    help="evaluate with the chunk store in this PostgreSQL database (copies of --index in "
                         "thinkgate_eval_* schemas, dropped afterwards)")
    ap.add_argument("--no-text-only", action="store_true",
                    help="skip the text-only dense baseline (it embeds every passage again: minutes on 2 cores)")
    args = ap.parse_args(argv)
    from retrieval.demo import debian_docs
    from retrieval.index import ChunkIndex
    from retrieval.retriever import Retriever

    try:
        ChunkIndex.open_existing(args.index).close()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    docs = Path(args.docs) if args.docs else debian_docs()
    if docs is None or not (docs / "faq").is_dir():
        print("error: the FAQ set needs the Python documentation sources (--docs DIR with faq/ and library/)",
              file=sys.stderr)
        sys.exit(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    extra = None
    url = args.database_url
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as cleanup:
        if url:
            cleanup.callback(drop_schemas, url)
        if (docs / "glossary.rst.txt").is_file():  # choose the fusion settings on the dev set first
            dev = glossary_questions(docs)
            rows = tune(without(Path(args.index), Path(work), "/glossary.", url), dev)
            best = pick(rows)
            results["dev_glossary"] = {"n": len(dev), "grid": rows, "picked": best}
            grid = "\n".join(f"| {r['lexical_weight']} | {r['source_decay']} | {r['hits']}/{len(dev)} = {r['recall']:.3f} |"
                             for r in rows)
            (out / "dev-grid.md").write_text(
                f"Glossary dev set (n = {len(dev)}), hybrid recall@5 over the pre-registered grid; picked "
                f"lexical_weight {best['lexical_weight']}, source_decay {best['source_decay']} (ties: the earlier "
                "row; the defaults come first).\n\n| lexical weight | same-page decay | recall@5 |\n|---|---|---|\n"
                + grid + "\n")
            print((out / "dev-grid.md").read_text())
            extra = {"hybrid+dev-tuned": ("hybrid", best["source_decay"], best["lexical_weight"])}
        baselines: dict[int, TextOnlyDense] = {}
        whole = without(Path(args.index), Path(work), None, url) if url else Retriever(args.index)
        for name, questions, retriever in (
                ("faq", faq_questions(docs), without_faq(Path(args.index), Path(work), url)),
                ("written", load_questions(), whole), ("task", load_questions((TASK,)), whole)):
            if not args.no_text_only and id(retriever) not in baselines:  # the written and task sets share one
                baselines[id(retriever)] = TextOnlyDense(retriever)
            results[name] = evaluate(retriever, questions, extra=extra, baseline=baselines.get(id(retriever)))
            (out / f"table-{name}.md").write_text(table(results[name]))
            print(f"## {name}\n\n{table(results[name])}")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
