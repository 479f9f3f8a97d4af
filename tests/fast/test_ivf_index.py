"""The inverted-file FAISS cache (retrieval.index, kinds "auto" and "ivf-fp16"): when it is
built, that it finds what the exact index finds, and that it is retrained or dropped as the
store grows and shrinks."""
import json

import numpy as np
import pytest

import retrieval.index as index_mod
from retrieval.chunking import Chunk
from retrieval.index import ChunkIndex


def clustered(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """`n` unit vectors around 8 centres (IVF's k-means has structure to find)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))
    v = centres[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def add(idx: ChunkIndex, source: str, vecs: np.ndarray) -> None:
    idx.replace_sources([(source, "h", [Chunk("", f"{source}:{i}", i) for i in range(len(vecs))], vecs)])


def gen_meta(tmp_path) -> dict:
    return json.loads((tmp_path / "index.gen").read_text())


def test_auto_switches_to_an_inverted_file_and_back(tmp_path, monkeypatch):
    monkeypatch.setattr(index_mod, "IVF_MIN_CHUNKS", 400)
    v = clustered(1200)
    idx = ChunkIndex(tmp_path, 16, "e")
    add(idx, "a", v[:300])
    assert idx.structure == "flat-fp16"
    add(idx, "b", v[300:600])  # 600 >= 400: rebuilt as an inverted file trained on all 600
    assert idx.structure == "ivf-fp16" and gen_meta(tmp_path)["trained_on"] == 600
    assert idx.faiss.nlist == index_mod.ivf_lists(600) and idx.faiss.nprobe >= 1
    hits = [idx.search(v[i], 1)[0].text for i in range(0, 600, 37)]
    assert hits == [("a" if i < 300 else "b") + f":{i % 300}" for i in range(0, 600, 37)]
    idx.close()
    again = ChunkIndex(tmp_path, 16, "e")  # the cache file is kept: same kind, nothing retrained
    assert again.structure == "ivf-fp16" and gen_meta(tmp_path)["trained_on"] == 600 and len(again) == 600
    again.delete_source("b")  # 300 >= 400 / 2: still an inverted file
    assert again.structure == "ivf-fp16"
    add(again, "c", v[600:1200])
    again.delete_source("a")
    again.delete_source("c")
    add(again, "d", v[:150])  # 150 < 200: back to flat
    assert again.structure == "flat-fp16" and len(again) == 150
    assert again.search(v[7], 1)[0].text == "d:7"


def test_ivf_keeps_the_exact_top_k_on_clustered_vectors(tmp_path):
    v = clustered(3000, seed=1)
    q = clustered(50, seed=2)
    ivf, flat = ChunkIndex(tmp_path / "i", 16, "e", kind="ivf-fp16"), ChunkIndex(tmp_path / "f", 16, "e", kind="flat")
    for idx in (ivf, flat):
        add(idx, "a", v)
    assert ivf.structure == "ivf-fp16" and ivf.faiss.nlist == index_mod.ivf_lists(3000)
    overlap = np.mean([len({p.id for p in ivf.search(x, 10)} & {p.id for p in flat.search(x, 10)}) / 10 for x in q])
    assert overlap >= 0.8  # 1/4 of the lists searched
    assert all(ivf.search(v[i], 1)[0].text == f"a:{i}" for i in range(0, 3000, 97))  # a stored vector finds itself


def test_forced_ivf_retrains_when_the_store_grows_fourfold(tmp_path):
    v = clustered(2000, seed=3)
    idx = ChunkIndex(tmp_path, 16, "e", kind="ivf-fp16")
    add(idx, "a", v[:400])
    assert gen_meta(tmp_path)["trained_on"] == 400
    add(idx, "b", v[400:1600])  # 1600 <= 4 x 400: added to the trained lists
    assert gen_meta(tmp_path)["trained_on"] == 400 and len(idx) == 1600
    add(idx, "c", v[1600:])  # 2000 > 1600: retrained on everything
    assert gen_meta(tmp_path)["trained_on"] == 2000 and idx.faiss.nlist == index_mod.ivf_lists(2000)
    assert idx.search(v[1999], 1)[0].text == "c:399"


def test_a_flat_cache_is_rebuilt_for_a_forced_ivf_and_unknown_kinds_are_refused(tmp_path):
    small = ChunkIndex(tmp_path / "s", 16, "e", kind="ivf-fp16")
    add(small, "a", clustered(20))  # too few to train on: flat stands in
    assert small.structure == "flat-fp16" and len(small) == 20
    add(flat := ChunkIndex(tmp_path, 16, "e"), "a", clustered(100))
    flat.close()
    assert ChunkIndex(tmp_path, 16, "e", kind="ivf-fp16").structure == "ivf-fp16"
    with pytest.raises(ValueError, match="index kind must be one of"):
        ChunkIndex(tmp_path, 16, "e", kind="hnsw")


def test_the_setting_reaches_the_index_and_a_bad_one_is_refused(tmp_path, monkeypatch):
    from pydantic import ValidationError

    from api.settings import Settings
    from retrieval.retriever import Retriever
    from tests.helpers import FakeEmbedder

    monkeypatch.setenv("THINKGATE_INDEX_KIND", "flat")
    opts = Settings(cache_dir=tmp_path).retriever_options()
    assert opts["index_kind"] == "flat"
    assert Retriever(tmp_path / "idx", FakeEmbedder(), **opts).index.kind == "flat"
    monkeypatch.setenv("THINKGATE_INDEX_KIND", "hnsw")
    with pytest.raises(ValidationError, match="index_kind"):
        Settings(cache_dir=tmp_path)
