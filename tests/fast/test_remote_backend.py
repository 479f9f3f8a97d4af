"""The remote backend against a fake OpenAI-compatible completions server (httpx mock transport)."""
import json
import math

import httpx
import pytest

from policy.base import GenerationParams
from policy.remote import RemoteError, RemotePolicy
from tests.helpers import byte_bpe_tokenizer

TOK = byte_bpe_tokenizer()


def fake_server(requests: list):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body)
        if body["model"] != "m":
            return httpx.Response(404, json={"error": {"message": "no such model"}})
        out_ids = TOK.encode("hello world", add_special_tokens=False)[: body["max_tokens"]]
        lines = []
        for i, t in enumerate(out_ids):
            last = i == len(out_ids) - 1
            choice = {"index": 0, "text": TOK.decode([t]),
                      "logprobs": {"tokens": [f"token_id:{t}"],
                                   "top_logprobs": [{"a": math.log(0.5), "b": math.log(0.5)}]},
                      "finish_reason": "length" if last else None, "stop_reason": None}
            lines.append("data: " + json.dumps({"choices": [choice]}))
        lines.append("data: [DONE]")
        return httpx.Response(200, text="\n\n".join(lines) + "\n\n", headers={"content-type": "text/event-stream"})
    return handler


async def test_remote_stream_tokens_and_topk_entropy():
    reqs: list = []
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake_server(reqs)), base_url="http://fake")
    p = RemotePolicy("http://fake", "m", TOK, client=client, max_context=512)
    ids = p.chat_prompt([{"role": "user", "content": "hi"}])
    g = await p.generate(ids, GenerationParams(max_tokens=50, stop=["\n\n"], seed=3))
    assert g.text == "hello world" and g.token_ids == TOK.encode("hello world", add_special_tokens=False)
    assert g.entropy_method == "topk" and g.finish_reason == "length"
    assert all(e == pytest.approx(math.log(2)) for e in g.entropies)  # two tokens at 0.5: no tail
    sent = reqs[0]
    assert sent["prompt"] == ids and sent["logprobs"] == 20 and sent["stop"] == ["\n\n"] and sent["seed"] == 3
    assert sent["return_tokens_as_token_ids"] is True


async def test_remote_errors():
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake_server([])), base_url="http://fake")
    p = RemotePolicy("http://fake", "other", TOK, client=client, max_context=64)
    with pytest.raises(RemoteError, match="404"):
        await p.generate([5, 6], GenerationParams(max_tokens=4))
    with pytest.raises(ValueError, match="context window"):
        await p.generate([5] * 70, GenerationParams(max_tokens=4))
