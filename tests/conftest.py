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


@pytest.fixture(scope="session")
def pg_cluster():
    """A private PostgreSQL cluster for the session (tests/pgcluster.py). Where PostgreSQL is not
    installed the test is skipped, except under CI (``CI`` set), where that is a failure."""
    from tests.pgcluster import PrivateCluster, pg_bindir

    if pg_bindir() is None:
        msg = "PostgreSQL is not installed (`make test` installs Debian's postgresql as root)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    with PrivateCluster() as pg:
        yield pg


@pytest.fixture
def pg_url(pg_cluster, request):
    """A fresh database on the session cluster, named after the test."""
    import re

    return pg_cluster.create_database(re.sub(r"\W+", "_", request.node.name)[:60].lower())
