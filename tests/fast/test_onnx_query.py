"""The ONNX query path (retrieval.onnx_query) on a tiny random BERT built here: the export
reproduces sentence-transformers' embedding, is cached and reused, and a bad export is refused."""
import numpy as np
import pytest

from tests.helpers import word_piece_tokenizer


def tiny_model(tmp_path, pooling="mean"):
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    tok = word_piece_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    d = tmp_path / "tiny-bert"
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    body = models.Transformer(str(d), max_seq_length=64)
    return SentenceTransformer(modules=[body, models.Pooling(32, pooling_mode=pooling), models.Normalize()]), d


def test_export_matches_torch_and_is_reused(tmp_path):
    from retrieval.onnx_query import OnnxQueryEncoder

    model, d = tiny_model(tmp_path)
    enc = OnnxQueryEncoder.load(model, d, root=tmp_path / "cache")
    texts = ["a list comprehension builds a list", "the lazy dog", "python " * 200]  # the last is truncated
    ref = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    got = np.stack([enc.encode(t) for t in texts])
    assert got.shape == (3, 32) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert (got * ref).sum(axis=1).min() > 0.9999
    files = list((tmp_path / "cache" / "onnx").glob("*-query-fp32/model.onnx"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = OnnxQueryEncoder.load(model, d, root=tmp_path / "cache")  # read, not exported again
    assert again.path == files[0] and files[0].stat().st_mtime_ns == mtime


def test_bad_export_is_refused_and_not_kept(tmp_path, monkeypatch):
    import retrieval.onnx_query as oq

    model, d = tiny_model(tmp_path)
    monkeypatch.setattr(oq, "MIN_COSINE", 1.5)  # no export can reach it
    with pytest.raises(oq.ExportMismatchError, match="differ from torch"):
        oq.OnnxQueryEncoder.load(model, d, root=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "onnx").glob("*-query-fp32*/model.onnx"))


def test_other_pooling_is_refused(tmp_path):
    from retrieval.onnx_query import OnnxQueryEncoder

    model, d = tiny_model(tmp_path, pooling="cls")
    with pytest.raises(ValueError, match="mean Pooling"):
        OnnxQueryEncoder.load(model, d, root=tmp_path / "cache")


def test_concurrent_queries_get_the_same_vectors(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from retrieval.onnx_query import OnnxQueryEncoder

    model, d = tiny_model(tmp_path)
    enc = OnnxQueryEncoder.load(model, d, root=tmp_path / "cache")
    texts = [f"the quick brown fox {'jumps ' * (i % 7)} over list {i}" for i in range(64)]
    alone = [enc.encode(t) for t in texts]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(enc.encode, texts))
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(alone, together))
