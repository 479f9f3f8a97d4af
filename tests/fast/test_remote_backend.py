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


def llama_cpp_server(cut_after: int | None = None, stop_string: str | None = None):
    """A fake of llama.cpp's server: chat-style `logprobs.content` entries with token ids, the stop
    string cut out of the text, an empty final chunk with the finish reason; `cut_after` ends the
    stream after that many tokens without a finish reason (a server that died)."""
    def handler(request: httpx.Request) -> httpx.Response:
        ids = TOK.encode("hello world", add_special_tokens=False)
        lines, text = [], ""
        for i, t in enumerate(ids):
            if cut_after is not None and i == cut_after:
                return httpx.Response(200, text="\n\n".join(lines) + "\n\n",
                                      headers={"content-type": "text/event-stream"})
            piece = TOK.decode([t])
            if stop_string and stop_string in text + piece:  # llama.cpp drops the stop string from its text
                piece = (text + piece).split(stop_string)[0][len(text):]
                lines.append("data: " + json.dumps({"choices": [{"text": piece, "index": 0, "finish_reason": None,
                    "logprobs": {"content": [{"id": t, "token": piece, "logprob": -0.1,
                                              "top_logprobs": [{"id": t, "logprob": math.log(0.5)},
                                                               {"id": 0, "logprob": math.log(0.5)}]}]}}]}))
                break
            text += piece
            lines.append("data: " + json.dumps({"choices": [{"text": piece, "index": 0, "finish_reason": None,
                "logprobs": {"content": [{"id": t, "token": piece, "logprob": -0.1,
                                          "top_logprobs": [{"id": t, "logprob": math.log(0.5)},
                                                           {"id": 0, "logprob": math.log(0.5)}]}]}}]}))
        lines.append("data: " + json.dumps({"choices": [{"text": "", "index": 0, "logprobs": None,
                                                         "finish_reason": "stop" if stop_string else "length"}]}))
        lines.append("data: [DONE]")
        return httpx.Response(200, text="\n\n".join(lines) + "\n\n", headers={"content-type": "text/event-stream"})
    return handler


async def test_llama_cpp_layout_ids_entropy_and_local_text():
    client = httpx.AsyncClient(transport=httpx.MockTransport(llama_cpp_server()), base_url="http://fake")
    p = RemotePolicy("http://fake", "m", TOK, client=client, max_context=512)
    g = await p.generate([5, 6], GenerationParams(max_tokens=50))
    assert g.text == "hello world" and g.token_ids == TOK.encode("hello world", add_special_tokens=False)
    assert all(e == pytest.approx(math.log(2)) for e in g.entropies) and g.finish_reason == "length"


async def test_a_stop_string_the_server_cut_out_is_kept_as_the_local_backends_keep_it():
    client = httpx.AsyncClient(transport=httpx.MockTransport(llama_cpp_server(stop_string="wor")), base_url="http://fake")
    p = RemotePolicy("http://fake", "m", TOK, client=client, max_context=512)
    g = await p.generate([5, 6], GenerationParams(max_tokens=50, stop=["wor"]))
    assert "wor" in g.text and g.finish_reason == "stop" and g.stop_reason == "wor"


async def test_a_stream_cut_before_its_finish_reason_is_a_remote_error():
    client = httpx.AsyncClient(transport=httpx.MockTransport(llama_cpp_server(cut_after=1)), base_url="http://fake")
    p = RemotePolicy("http://fake", "m", TOK, client=client, max_context=512)
    with pytest.raises(RemoteError, match="without a finish reason"):
        await p.generate([5, 6], GenerationParams(max_tokens=50))

    def refuse(request):
        raise httpx.ConnectError("connection refused")

    p2 = RemotePolicy("http://fake", "m", TOK, client=httpx.AsyncClient(transport=httpx.MockTransport(refuse),
                                                                        base_url="http://fake"), max_context=512)
    with pytest.raises(RemoteError, match="connection failed: ConnectError"):
        await p2.generate([5, 6], GenerationParams(max_tokens=5))
