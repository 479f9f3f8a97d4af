"""A client that hangs up stops its generation (issue 9): a real uvicorn server started here, a
tiny in-process backend slowed to ~10 ms a token, and the backend's live generated-token counter
(`LocalPolicy.stats["generated_tokens"]`) read before and after the client disconnects."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from agent.config import AgentConfig
from api.app import create_app
from api.settings import Settings
from policy.transformers_backend import TransformersPolicy
from retrieval.retriever import Retriever
from tests.helpers import FakeEmbedder, byte_bpe_tokenizer, tiny_llama

pytestmark = pytest.mark.integration
TOKEN_S = 0.01


class EndlessPolicy(TransformersPolicy):
    """Always picks the same ordinary token (never EOS, never a stop string) at ~10 ms a token."""

    def _forward(self, slot, ids):
        time.sleep(TOKEN_S)
        return super()._forward(slot, ids)

    def _pick(self, logits, params, rng) -> int:
        return self.tokenize("a")[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    tmp = tmp_path_factory.mktemp("disc")
    tok = byte_bpe_tokenizer()
    policy = EndlessPolicy(tiny_llama(len(tok), max_positions=4096), tok, name="tiny", device="cpu", cache_slots=2, threads=1)
    app = create_app(Settings(cache_dir=tmp), policy=policy, retriever=Retriever(tmp / "idx", FakeEmbedder()),
                     agent_config=AgentConfig(max_answer_tokens=400))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(600):
        if srv.started:
            break
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", policy
    srv.should_exit = True
    th.join(10)


def _settled(policy, quiet_s: float = 0.3) -> int:
    """The counter once it has not moved for `quiet_s`."""
    last = policy.stats["generated_tokens"]
    while True:
        time.sleep(quiet_s)
        now = policy.stats["generated_tokens"]
        if now == last:
            return now
        last = now


BODY = {"messages": [{"role": "user", "content": "go"}], "reasoning_effort": "none", "max_completion_tokens": 400}


def test_stream_disconnect_stops_generation(server):
    url, policy = server
    start = policy.stats["generated_tokens"]
    with httpx.Client(base_url=url, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as r:
            assert r.status_code == 200
            seen = 0
            for line in r.iter_lines():
                seen += line.startswith('data: {"id"') and '"content":"a' in line
                if seen >= 3:
                    break
            at_close = policy.stats["generated_tokens"]
    after = _settled(policy)
    print(f"stream: {at_close - start} tokens before the client hung up, {after - at_close} after")
    assert after - start < 400 / 2  # far from the 400 it was asked for
    assert after - at_close <= 3  # stopped within a token or two of the hang-up (≈ 10 ms each)


def test_plain_request_disconnect_stops_generation(server):
    url, policy = server
    start = policy.stats["generated_tokens"]
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=0.6)) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/v1/chat/completions", json=BODY)
        at_close = policy.stats["generated_tokens"]
    after = _settled(policy)
    print(f"plain: {at_close - start} tokens before the client hung up, {after - at_close} after")
    assert after - start < 400 / 2
    assert after - at_close <= 3
