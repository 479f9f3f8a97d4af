import json
import os
import subprocess
import sys

import numpy as np
import pytest

from retrieval.chunking import Chunk, Chunker
from retrieval.index import ChunkIndex, IndexMismatchError
from retrieval.loaders import Section, UnsupportedFormatError, load_file, parse_html, parse_markdown, parse_rst
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder, word_piece_tokenizer

RST = """Built-in Functions
==================

Intro text.

.. function:: len(s)

   Return the length of an object. See :func:`list` and `docs <http://x>`_.

Lists
-----

A list comprehension builds a list.
"""


def test_rst_sections_and_markup():
    secs = parse_rst(RST)
    heads = [s.heading for s in secs]
    assert heads == ["Built-in Functions", "Built-in Functions > len(s)", "Built-in Functions > Lists"]
    assert "Return the length of an object. See list and docs." in secs[1].text
    assert ".. function::" not in secs[1].text and ":func:" not in secs[1].text


def test_markdown_and_html_headings():
    md = parse_markdown("# Title\n\nintro\n\n## Part\n\n```\n# not a heading\n```\nbody\n")
    assert [s.heading for s in md] == ["Title", "Title > Part"]
    assert "# not a heading" in md[1].text
    h = parse_html("<html><head><title>x</title><style>p{}</style></head><body><h1>Top</h1><p>a &amp; b</p>"
                   "<h2>Sub</h2><p>c</p><script>evil()</script></body></html>")
    assert [(s.heading, s.text) for s in h] == [("Top", "a & b"), ("Top > Sub", "c")]


def test_load_file_by_suffix(tmp_path):
    (tmp_path / "a.rst.txt").write_text(RST)
    (tmp_path / "b.txt").write_text("plain text")
    (tmp_path / "c.pdf").write_text("x")
    assert load_file(tmp_path / "a.rst.txt")[0].heading == "Built-in Functions"
    assert load_file(tmp_path / "b.txt")[0].text == "plain text"
    with pytest.raises(UnsupportedFormatError):
        load_file(tmp_path / "c.pdf")


def test_chunker_fits_window_overlaps_and_covers_all_words():
    tok = word_piece_tokenizer()
    ch = Chunker(tok, max_tokens=32, overlap=6)
    words = [f"word{i % 50}" for i in range(400)]
    text = " ".join(words[:150]) + ".\n\n" + " ".join(words[150:])
    chunks = ch.chunk([Section("Head > Sub", text)])
    assert len(chunks) > 5
    for c in chunks:
        assert ch.count(c.embed_text) <= 32, c.embed_text
        assert c.heading == "Head > Sub"
    joined = " ".join(c.text for c in chunks)
    assert set(text.replace(".", " ").split()) <= set(joined.replace(".", " ").split())
    # consecutive chunks share text (overlap)
    assert any(chunks[i].text.split()[0] in chunks[i - 1].text.split()[-8:] for i in range(1, len(chunks)))
    assert [c.position for c in chunks] == list(range(len(chunks)))
    with pytest.raises(ValueError, match="overlap"):
        Chunker(tok, max_tokens=32, overlap=16)


def _vecs(n, dim=8, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_index_persists_searches_and_deletes(tmp_path):
    idx = ChunkIndex(tmp_path, 8, "e")
    v = _vecs(5)
    idx.replace_sources([("a", "h1", [Chunk("H", f"text {i}", i) for i in range(3)], v[:3]),
                         ("b", "h2", [Chunk("", "other", 0), Chunk("", "more", 1)], v[3:])])
    hits = idx.search(v[1], 2)
    assert hits[0].text == "text 1" and hits[0].score == pytest.approx(1.0, abs=1e-3)  # fp16 storage
    idx.close()
    idx2 = ChunkIndex(tmp_path, 8, "e")
    assert len(idx2) == 5 and idx2.search(v[1], 1)[0].text == "text 1"
    assert idx2.delete_source("a") == 3 and len(idx2) == 2
    assert idx2.delete_source("missing") == 0
    assert all(h.source == "b" for h in idx2.search(v[1], 5))
    assert [s["source"] for s in idx2.sources()] == ["b"]
    with pytest.raises(IndexMismatchError):
        ChunkIndex(tmp_path, 16, "e")
    idx2.close()
    exact = ChunkIndex(tmp_path, 8, "e", kind="flat")  # another kind: rebuilt from SQLite's float32 vectors
    assert len(exact) == 2 and exact.search(v[3], 1)[0].score == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="index kind"):
        ChunkIndex(tmp_path, 8, "e", kind="hnsw")


def test_stale_or_torn_faiss_file_is_rebuilt_from_sqlite(tmp_path):
    idx = ChunkIndex(tmp_path, 8, "e")
    v = _vecs(4)
    idx.replace_sources([("a", "h", [Chunk("", f"t{i}", i) for i in range(4)], v)])
    idx.close()
    (tmp_path / "index.faiss").write_bytes(b"torn write")  # crash while writing the cache
    idx2 = ChunkIndex(tmp_path, 8, "e")
    assert len(idx2) == 4 and idx2.search(v[2], 1)[0].text == "t2"
    idx2.close()
    (tmp_path / "index.gen").write_text(json.dumps({"generation": 0}))  # crash before the gen was written
    idx3 = ChunkIndex(tmp_path, 8, "e")
    assert len(idx3) == 4


def test_failed_write_rolls_back_and_keeps_previous_index(tmp_path):
    idx = ChunkIndex(tmp_path, 8, "e")
    v = _vecs(3)
    idx.replace_sources([("a", "h", [Chunk("", "keep me", 0)], v[:1])])
    with pytest.raises(ValueError, match="shape"):
        idx.replace_sources([("b", "h", [Chunk("", "x", 0)], v[1:2]),
                             ("a", "h2", [Chunk("", "y", 0), Chunk("", "z", 1)], v[:1])])  # wrong shape
    assert len(idx) == 1 and idx.search(v[0], 1)[0].text == "keep me"
    assert [s["source"] for s in idx.sources()] == ["a"] and idx.file_hash("a") == "h"


def test_crash_mid_ingest_leaves_previous_index_usable(tmp_path):
    """Kill a process in the middle of a second ingest; the first ingest's index still opens and searches."""
    idx_dir = tmp_path / "idx"
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"d{i}.txt").write_text(f"document number {i} about python lists and tuples " * 20)
    code = f"""
import os, sys
sys.path.insert(0, {os.getcwd()!r})
from tests.helpers import FakeEmbedder
from retrieval.retriever import Retriever
r = Retriever({str(idx_dir)!r}, FakeEmbedder(), batch_chunks=1)
if sys.argv[1] == "crash":
    orig = r.index.replace_sources
    n = [0]
    def boom(items, save=True):
        n[0] += 1
        if n[0] == 3:
            os._exit(9)  # dies between two committed batches, mid-ingest
        return orig(items, save)
    r.index.replace_sources = boom
r.ingest([{str(docs)!r}], progress=False)
"""
    assert subprocess.run([sys.executable, "-c", code, "ok"], timeout=120).returncode == 0
    before = Retriever(idx_dir, FakeEmbedder())
    n_before = len(before)
    before.index.close()
    for i in range(6):  # change every file so the second ingest rewrites them all
        (docs / f"d{i}.txt").write_text(f"changed text {i} about dicts and sets " * 30)
    assert subprocess.run([sys.executable, "-c", code, "crash"], timeout=120).returncode == 9
    after = Retriever(idx_dir, FakeEmbedder())
    assert len(after) > 0 and after.search("python lists", 3)
    assert len(after) == after.index.store.count()  # FAISS and SQLite agree
    assert n_before > 0


def test_retriever_ingest_skips_unchanged_and_replaces_changed(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text("# Lists\n\nA list comprehension builds a list.\n")
    (docs / "sub" / "b.txt").write_text("len returns the length of an object")
    (docs / "ignored.bin").write_bytes(b"\x00\x01")
    emb = FakeEmbedder()
    r = Retriever(tmp_path / "idx", emb)
    rep = r.ingest([docs], progress=False)
    assert (rep.files_seen, rep.files_indexed, rep.files_skipped) == (2, 2, 0) and rep.chunks_added == 2
    calls = emb.calls
    rep2 = r.ingest([docs], progress=False)
    assert (rep2.files_indexed, rep2.files_skipped, rep2.chunks_added) == (0, 2, 0) and emb.calls == calls
    (docs / "a.md").write_text("# Tuples\n\nTuples are immutable sequences.\n")
    rep3 = r.ingest([docs], progress=False)
    assert rep3.files_indexed == 1 and len(r) == 2
    assert r.search("tuples immutable sequences", 1)[0].heading == "Tuples"
    with pytest.raises(FileNotFoundError):
        r.ingest([tmp_path / "nope"], progress=False)
    with pytest.raises(ValueError, match="k must be"):
        r.search("x", 0)
    assert r.add_text("api-doc", "# H\n\nsome text", "md") == 1
    assert r.delete("api-doc") == 1
    # the NTR corpus reads chunk texts through the index's public API, not its SQLite schema
    from retrieval.index import ChunkIndex
    from training.ntr import load_corpus

    texts = [p.text for p in ChunkIndex.open_existing(tmp_path / "idx").iter_chunks(batch=1)]
    assert len(texts) == 2 and any("immutable" in t for t in texts)
    assert load_corpus(index_dir=tmp_path / "idx", min_chars=5) == texts
    with pytest.raises(FileNotFoundError, match="no index at"):
        load_corpus(index_dir=tmp_path / "missing")


def test_cli_reports_bad_input_in_one_line(tmp_path):
    env = dict(os.environ, THINKGATE_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "cli.main", "ingest", str(tmp_path / "missing")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == f"error: no such file or folder: {tmp_path / 'missing'}"
    out = subprocess.run([sys.executable, "-m", "cli.main", "search", "  "], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error: query is empty")


def test_fallback_demo_corpus_from_the_interpreter(tmp_path):
    """Where Debian's python3.11-doc is missing, the demo corpus comes from pydoc_data and stdlib docstrings."""
    code = ("import sys; from pathlib import Path; from retrieval.demo import write_fallback; "
            f"write_fallback(Path({str(tmp_path / 'c')!r}))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, capture_output=True)
    topics = list((tmp_path / "c" / "topics").glob("*.txt"))
    modules = list((tmp_path / "c" / "modules").glob("*.rst"))
    assert len(topics) > 50 and len(modules) > 50
    secs = load_file(tmp_path / "c" / "modules" / "json.rst")
    assert secs[0].heading == "json" and "JSON" in secs[0].text


def test_prefetch_keeps_order_and_raises_the_worker_error():
    """Ingest's read-ahead: results in input order; an unexpected error in the worker reaches the
    consumer instead of silently ending the loop with files missing."""
    import pytest

    from retrieval.retriever import _prefetch

    assert list(_prefetch(lambda x: x * 2, list(range(50)), depth=3)) == [2 * x for x in range(50)]

    def boom(x):
        if x == 5:
            raise RuntimeError("disk on fire")
        return x

    got = []
    with pytest.raises(RuntimeError, match="disk on fire"):
        for r in _prefetch(boom, list(range(10))):
            got.append(r)
    assert got == [0, 1, 2, 3, 4]
