"""Shared fixtures. The integration tier (marked `integration`) uses the real SmolLM2-135M and
all-MiniLM-L6-v2 prepared by `make models`; the fast tier builds tiny models in memory."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.helpers import byte_bpe_tokenizer, tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_policy():
    """TransformersPolicy over a tiny random Llama and an in-memory tokenizer (CPU)."""
    from policy.transformers_backend import TransformersPolicy

    tok = byte_bpe_tokenizer()
    return TransformersPolicy(tiny_llama(len(tok)), tok, name="tiny", device="cpu", cache_slots=2, threads=1)
