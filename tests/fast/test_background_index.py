"""Serving while indexing: the background build makes each flushed batch searchable at once,
reports progress (files, chunks, ETA) and resumes; the API shows it in /healthz and in each
answer's metadata while the index is partial."""
import threading
from pathlib import Path

import httpx

from agent.config import AgentConfig
from api.app import create_app
from api.settings import Settings
from retrieval.background import BackgroundIngest
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder, MockPolicy

DATA = Path(__file__).parent.parent / "data"


class GatedEmbedder(FakeEmbedder):
    """Encodes the first batch at once; later batches wait for `release`."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def encode(self, texts, progress=False):
        if self.calls >= 1 and len(texts) > 1:  # ingest batches (queries are single texts) after the first
            assert self.release.wait(30), "test never released the embedder"
        return super().encode(texts, progress)


def _retriever(tmp_path):
    return Retriever(tmp_path / "idx", GatedEmbedder(), batch_chunks=1)  # one file per flush


def test_partial_index_is_searchable_then_done_then_resumes(tmp_path):
    r = _retriever(tmp_path)
    job = BackgroundIngest(r, [DATA], log_every=0).start()
    for _ in range(300):
        if len(r) > 0:
            break
        threading.Event().wait(0.01)
    st = job.status()
    assert len(r) > 0 and st.state == "building" and st.partial and st.files_total == 4
    assert r.search("list comprehension", k=2)  # what is indexed so far answers
    r.embedder.release.set()
    assert job.done.wait(30)
    st = job.status()
    assert st.state == "done" and not st.partial and st.files_done == 4 and st.chunks == len(r) and st.eta_s == 0
    again = BackgroundIngest(Retriever(tmp_path / "idx", FakeEmbedder(), batch_chunks=1), [DATA]).start()
    assert again.done.wait(30) and again.status().chunks == st.chunks  # unchanged files skipped: resumed


def test_missing_corpus_fails_the_build_not_the_service(tmp_path):
    job = BackgroundIngest(_retriever(tmp_path), [tmp_path / "nope"]).start()
    assert job.done.wait(10)
    st = job.status()
    assert st.state == "failed" and "no such file or folder" in st.error and st.partial


async def test_api_reports_a_partial_index_in_healthz_and_answers(tmp_path):
    r = _retriever(tmp_path)
    job = BackgroundIngest(r, [DATA], log_every=0)
    app = create_app(Settings(cache_dir=tmp_path), policy=MockPolicy(lambda p, k: ("Answer.", 0.1, True)),
                     retriever=r, agent_config=AgentConfig(), indexing=job)
    body = {"model": "mock", "messages": [{"role": "user", "content": "what is a list comprehension"}]}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            for _ in range(300):  # the first batch is in (later ones wait for the test)
                if len(r) > 0:
                    break
                threading.Event().wait(0.01)
            h = (await c.get("/healthz")).json()
            assert h["index"]["state"] == "building" and h["index"]["partial"] is True
            assert h["index"]["files_total"] == 4 and "eta_s" in h["index"]
            j = (await c.post("/v1/chat/completions", json=body)).json()
            assert j["thinkgate"]["index"]["partial"] is True
            r.embedder.release.set()
            assert job.done.wait(30)
            h = (await c.get("/healthz")).json()
            assert h["index"]["state"] == "done" and h["index"]["partial"] is False and h["chunks"] == len(r)
            j = (await c.post("/v1/chat/completions", json=body)).json()
            assert "index" not in j["thinkgate"]
