"""The chunk-store contract (issue 12), run against both stores: SQLite (fast tier) and
PostgreSQL (a private cluster the session starts; integration tier). Two `ChunkIndex` objects on
one store stand for two replicas: each keeps its own FAISS cache and follows the other's writes."""
import json
import sqlite3

import numpy as np
import pytest

from retrieval.chunking import Chunk
from retrieval.index import ChunkIndex, IndexMismatchError
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder

STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]


@pytest.fixture(params=STORES)
def open_index(request, tmp_path):
    """open_index(name="a", **kw) → a ChunkIndex on this test's store; each name is one replica
    (own cache dir in PostgreSQL; SQLite replicas share the dir, as processes on one machine do)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    made = []

    def make(name: str = "a", dim: int = 8, embedder: str = "e", **kw):
        d = tmp_path / (name if url else "idx")
        idx = ChunkIndex(d, dim, embedder, database_url=url, **kw)
        made.append(idx)
        return idx

    make.url = url
    yield make
    for idx in made:
        try:
            idx.close()
        except Exception:
            pass


def _vecs(n, dim=8, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _chunks(prefix, n, heading="H"):
    return [Chunk(heading, f"{prefix} {i}", i) for i in range(n)]


def test_persists_searches_deletes_and_refuses_another_embedder(open_index):
    idx = open_index()
    v = _vecs(5)
    assert idx.replace_sources([("a", "h1", _chunks("text", 3), v[:3]), ("b", "h2", _chunks("other", 2), v[3:])]) == 5
    hits = idx.search(v[1], 2)
    assert hits[0].text == "text 1" and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert idx.file_hash("a") == "h1" and idx.file_hash("zzz") is None
    idx.close()
    again = open_index()
    assert len(again) == 5 and again.search(v[1], 1)[0].text == "text 1"
    assert again.delete_source("a") == 3 and len(again) == 2 and again.delete_source("missing") == 0
    assert all(h.source == "b" for h in again.search(v[1], 5))
    assert [s["source"] for s in again.sources()] == ["b"]
    with pytest.raises(IndexMismatchError):
        open_index("c", dim=16)
    assert [p.text for p in again.iter_chunks(batch=1)] == ["other 0", "other 1"]


def test_failed_write_rolls_back(open_index):
    idx = open_index()
    v = _vecs(3)
    idx.replace_sources([("a", "h", _chunks("keep me", 1), v[:1])])
    with pytest.raises(ValueError, match="shape"):
        idx.replace_sources([("b", "h", _chunks("x", 1), v[1:2]), ("a", "h2", _chunks("y", 2), v[:1])])
    assert len(idx) == 1 and idx.search(v[0], 1)[0].text == "keep me 0"
    assert [s["source"] for s in idx.sources()] == ["a"] and idx.file_hash("a") == "h"


def test_a_replica_follows_another_replicas_writes_incrementally(open_index):
    a, b = open_index("a", refresh_s=0), open_index("b", refresh_s=0)
    v = _vecs(6)
    a.replace_sources([("doc1", "h", _chunks("one", 2), v[:2])])
    assert [h.text for h in b.search(v[1], 1)] == ["one 1"]  # written through a, found through b
    gen = b._gen
    a.replace_sources([("doc1", "h2", _chunks("uno", 1), v[2:3]), ("doc2", "h", _chunks("two", 3), v[3:])])
    ch = b.store.changes_since(gen)  # what b fetches: only the new chunks and the replaced ids
    assert len(ch.added_ids) == 4 and len(ch.removed) == 2 and ch.generation == gen + 1
    assert len(b) == 4 and b.search(v[0], 1)[0].text != "one 0"
    a.delete_source("doc2")
    assert len(b) == 1 and b.search(v[2], 1)[0].text == "uno 0"
    assert b.faiss.ntotal == b.store.count()


def test_refresh_interval_bounds_how_often_the_store_is_read(open_index):
    a, b = open_index("a", refresh_s=0), open_index("b", refresh_s=3600)
    v = _vecs(2)
    b.search(v[0], 1)
    a.replace_sources([("doc", "h", _chunks("new", 1), v[:1])])
    assert b.search(v[0], 1) == []  # not looked for yet
    assert b.refresh(force=True) and b.search(v[0], 1)[0].text == "new 0"


def test_a_cache_file_behind_the_store_catches_up_on_open(open_index, tmp_path):
    a = open_index("a")
    v = _vecs(4)
    a.replace_sources([("x", "h", _chunks("x", 2), v[:2])])
    a.close()
    other = open_index("b")  # another process writes while a is down
    other.replace_sources([("y", "h", _chunks("y", 2), v[2:])])
    other.delete_source("x")
    a2 = open_index("a")
    assert len(a2) == 2 and {h.source for h in a2.search(v[2], 4)} == {"y"}
    cache_dir = a2.dir
    meta = json.loads((cache_dir / "index.gen").read_text())
    assert meta["generation"] == a2.store.generation() and meta["store"] == a2.store.store_id


def test_lexical_search_follows_writes_and_ranks_page_names(open_index):
    idx = open_index()
    v = _vecs(4)
    idx.replace_sources([("library/shutil.md", "h", [Chunk("shutil", "Use copyfile to copy the contents", 0)], v[:1]),
                         ("library/json.md", "h", [Chunk("json", "Serialize objects to a string", 0)], v[1:2]),
                         ("tutorial/lists.md", "h", [Chunk("Lists", "lists hold items; sort orders items", 0),
                                                     Chunk("Lists > Copying", "slicing copies items", 1)], v[2:])])
    ids = [i for i, _ in idx.lexical_search("How do I use shutil?", 3)]
    assert [p.source for p in idx.fetch(ids).values()][:1] == ["library/shutil.md"]
    assert idx.lexical_search("the of and", 3) == []
    assert len(idx.lexical_search("items", 10, max_postings=None)) == 2
    assert len(idx.lexical_search("items serialize", 10, max_postings=1)) == 1  # the common word is left out
    assert idx.lexical_search("items", 10, max_postings=1)  # but never every word
    idx.delete_source("library/shutil.md")
    assert idx.lexical_search("copyfile contents", 5) == []


def test_hybrid_retriever_on_the_store(open_index, tmp_path):
    r = Retriever(tmp_path / "r", FakeEmbedder(), database_url=open_index.url)
    r.add_text("library/copy.md", "# copy\n\nThe deepcopy function copies nested objects.", "md")
    r.add_text("library/json.md", "# json\n\nSerialize objects to a JSON formatted string.", "md")
    for mode in ("dense", "lexical", "hybrid"):
        assert r.search("deepcopy nested objects", 1, mode=mode)[0].source == "library/copy.md"
    r.index.close()


def test_old_sqlite_index_without_generations_is_migrated(tmp_path):
    d = tmp_path / "old"
    idx = ChunkIndex(d, 8, "e")
    v = _vecs(3)
    idx.replace_sources([("a", "h", _chunks("t", 3), v)])
    idx.close()
    db = sqlite3.connect(d / "chunks.sqlite")  # the schema before issue 12: no generation column
    db.executescript("""CREATE TABLE c2 (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
                            heading TEXT NOT NULL, text TEXT NOT NULL, position INTEGER NOT NULL, embedding BLOB NOT NULL);
                        INSERT INTO c2 SELECT id, source, heading, text, position, embedding FROM chunks;
                        DROP TABLE chunks; ALTER TABLE c2 RENAME TO chunks; DROP TABLE tombstones;
                        DELETE FROM meta WHERE key IN ('tombstones_from', 'store_id');""")
    db.close()
    again = ChunkIndex(d, 8, "e")
    assert len(again) == 3 and again.search(v[2], 1)[0].text == "t 2"
    assert again.store.changes_since(0) is None  # tombstones start at the migration: older caches rebuild
    again.replace_sources([("b", "h", _chunks("u", 1), v[:1])])
    assert len(again) == 4


def test_unknown_database_url_scheme_is_refused(tmp_path):
    with pytest.raises(ValueError, match="postgresql://"):
        ChunkIndex(tmp_path, 8, "e", database_url="mysql://x/y")
    from api.settings import Settings

    with pytest.raises(ValueError, match="THINKGATE_DATABASE_URL must start with postgresql://"):
        Settings(database_url="sqlite:///x.db")


def test_two_writers_of_one_source_never_leave_duplicates(open_index):
    """Replicas replacing the same document at once: writes are serialized, so the store ends with
    exactly one version of it, and each replica's cache agrees with the store."""
    import threading

    a, b = open_index("a", refresh_s=0), open_index("b", refresh_s=0)
    v = _vecs(6)
    errors = []

    def write(idx, tag):
        try:
            for i in range(15):
                n = 1 + (i % 3)
                idx.replace_sources([("shared.md", f"{tag}{i}", _chunks(f"{tag}{i}", n), v[:n])], save=False)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(idx, tag)) for idx, tag in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    (row,) = [s for s in a.sources() if s["source"] == "shared.md"]
    assert a.store.count() == row["chunks"]  # one version only
    texts = {p.text.rsplit(" ", 1)[0] for p in a.iter_chunks()}
    assert len(texts) == 1  # all chunks from the same write
    assert len(a) == len(b) == row["chunks"]


@pytest.mark.integration
def test_copy_a_sqlite_index_into_postgres_resumably(tmp_path, pg_url):
    from retrieval.store import copy_store

    src = ChunkIndex(tmp_path / "sq", 8, "e")
    v = _vecs(5)
    src.replace_sources([("a", "h1", _chunks("a", 3), v[:3]), ("b", "h2", _chunks("b", 2), v[3:])])
    dst = ChunkIndex(tmp_path / "pg", 8, "e", database_url=pg_url)
    assert copy_store(src.store, dst.store, batch=1) == (2, 0)
    assert copy_store(src.store, dst.store) == (0, 2)  # a re-run skips what is there
    dst.refresh(force=True)
    assert len(dst) == 5 and dst.search(v[4], 1)[0].text == "b 1"
    assert [p.text for p in dst.iter_chunks()] == [p.text for p in src.iter_chunks()]
    wrong = ChunkIndex(tmp_path / "sq16", 16, "e")
    with pytest.raises(IndexMismatchError):
        copy_store(wrong.store, dst.store)


def test_an_inverted_file_replica_follows_writes_and_retrains(open_index):
    a, b = open_index("a", refresh_s=0, kind="ivf-fp16"), open_index("b", refresh_s=0, kind="ivf-fp16")
    v = _vecs(400, seed=3)
    a.replace_sources([("doc1", "h", _chunks("one", 100), v[:100])])
    assert len(b) == 100 and b.structure == "ivf-fp16"  # len() refreshes: trained on the 100
    assert b.search(v[42], 1)[0].text == "one 42"
    a.replace_sources([("doc2", "h", _chunks("two", 300), v[100:])])  # 400 = 4 x 100: kept, vectors added
    assert len(b) == 400 and b.search(v[250], 1)[0].text == "two 150"
    a.replace_sources([("doc3", "h", _chunks("three", 1), _vecs(1, seed=9))])  # 401 > 4 x 100: retrained
    assert len(b) == 401 and b.faiss.ntotal == b.store.count() and b._trained_on == 401
    a.delete_source("doc2")
    assert len(b) == 101 and b.search(v[7], 1)[0].text == "one 7"
