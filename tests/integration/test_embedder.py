"""Integration: the real all-MiniLM-L6-v2, int8 (the CPU default) against fp32 (the reference)."""
import numpy as np
import pytest

pytestmark = pytest.mark.integration

TEXTS = ["A list comprehension builds a new list from an iterable.",
         "The with statement wraps a block with methods defined by a context manager.",
         "dict.get(key) returns None when the key is missing and no default is given.",
         "Generators produce items lazily and keep their state between calls to next()."]


def test_int8_embeddings_stay_close_to_fp32_and_rank_alike():
    from retrieval.embedder import Embedder

    fp32, int8 = Embedder(weights="fp32"), Embedder()
    assert int8.weights == "int8" and fp32.weights == "fp32"
    a, b = fp32.encode(TEXTS), int8.encode(TEXTS)
    assert b.shape == a.shape == (4, 384) and np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-4)
    assert (a * b).sum(axis=1).min() > 0.95  # measured 0.98 mean, 0.97 min on docs chunks
    q = "how do I build a list from another list"
    assert int(np.argmax(b @ int8.encode([q])[0])) == int(np.argmax(a @ fp32.encode([q])[0])) == 0
    with pytest.raises(ValueError, match="embedder weights must be one of"):
        Embedder(weights="int3")


def test_queries_run_on_onnx_and_match_fp32():
    from retrieval.embedder import Embedder

    onnx, ref = Embedder(), Embedder(weights="fp32", query_backend="torch")
    assert onnx.query_backend == "onnx" and ref.query_backend == "torch"
    for q in ("how do I build a list from another list", "what does functools.lru_cache do? " * 40):
        a, b = onnx.encode_query(q), ref.encode_query(q)
        assert a.shape == (384,) and a.dtype == np.float32
        assert float(a @ b) > 0.9999  # the fp32 model, exported; measured 1.000
        assert np.allclose(b, ref.encode([q])[0], atol=1e-6)
    with pytest.raises(ValueError, match="query_backend must be one of"):
        Embedder(query_backend="tensorrt")


def test_a_failed_export_falls_back_to_torch_unless_onnx_was_asked_for(monkeypatch, caplog):
    import retrieval.onnx_query as oq
    from retrieval.embedder import Embedder

    def broken(*a, **k):
        raise oq.ExportMismatchError("the ONNX export's embeddings differ from torch's: cosine 0.5")

    monkeypatch.setattr(oq.OnnxQueryEncoder, "load", broken)
    e = Embedder()
    assert e.query_backend == "torch" and "falls back to torch" in caplog.text
    assert np.allclose(e.encode_query("open a file"), e.encode(["open a file"])[0])
    with pytest.raises(oq.ExportMismatchError):
        Embedder(query_backend="onnx")
