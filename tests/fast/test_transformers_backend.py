import asyncio

import pytest
import torch

from policy.base import GenerationParams, PromptTooLongError
from policy.entropy import logits_entropy
from tests.helpers import check_prefix_cache_rollback


async def test_greedy_matches_hf_generate_and_entropy_is_exact(tiny_policy):
    p = tiny_policy
    ids = p.chat_prompt([{"role": "user", "content": "hello world"}])
    p.reset_cache()
    g = await p.generate(ids, GenerationParams(max_tokens=12))
    ref = p.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                           pad_token_id=2)[0, len(ids):].tolist()
    n = len(g.token_ids)
    assert g.token_ids == ref[:n]
    # entropy of the first generated position, computed independently from a full forward
    with torch.no_grad():
        logits = p.model(torch.tensor([ids])).logits[0, -1]
    assert g.entropies[0] == pytest.approx(float(logits_entropy(logits)[0]), rel=1e-4)
    assert len(g.entropies) == n and g.entropy_method == "exact"


async def test_prefix_cache_reuse_and_rollback_give_cold_results(tiny_policy):
    await check_prefix_cache_rollback(tiny_policy, dict(rel=1e-4))


async def test_concurrent_requests_queue_without_corruption(tiny_policy):
    p = tiny_policy
    prompts = [p.chat_prompt([{"role": "user", "content": f"hello {w}"}]) for w in ("world", "answer", "python lists")]
    p.reset_cache()
    seq = [await p.generate(x, GenerationParams(max_tokens=10)) for x in prompts]
    p.reset_cache()
    par = await asyncio.gather(*(p.generate(x, GenerationParams(max_tokens=10)) for x in prompts))
    assert [g.token_ids for g in par] == [g.token_ids for g in seq]


async def test_stream_equals_generate_and_stops(tiny_policy):
    p = tiny_policy
    ids = p.chat_prompt([{"role": "user", "content": "hello"}])
    g = await p.generate(ids, GenerationParams(max_tokens=10))
    deltas = [d async for d in p.stream(ids, GenerationParams(max_tokens=10))]
    assert "".join(d.text for d in deltas) == g.text
    assert deltas[-1].finish_reason in ("stop", "length") and all(d.finish_reason is None for d in deltas[:-1])
    # a stop string that occurs in the greedy text ends generation right after it
    if len(g.text) > 2:
        stop = g.text[1:3]
        s = await p.generate(ids, GenerationParams(max_tokens=10, stop=[stop]))
        assert s.finish_reason == "stop" and s.stop_reason == stop and stop in s.text
        assert len(s.token_ids) <= len(g.token_ids)


async def test_sampling_is_seeded(tiny_policy):
    p = tiny_policy
    ids = p.chat_prompt([{"role": "user", "content": "hello"}])
    a = await p.generate(ids, GenerationParams(max_tokens=10, temperature=1.5, seed=7))
    b = await p.generate(ids, GenerationParams(max_tokens=10, temperature=1.5, seed=7))
    assert a.token_ids == b.token_ids


async def test_prompt_too_long_and_bad_params(tiny_policy):
    with pytest.raises(PromptTooLongError):
        await tiny_policy.generate([5] * 600, GenerationParams(max_tokens=4))
    with pytest.raises(ValueError):
        GenerationParams(max_tokens=0)
    with pytest.raises(ValueError):
        GenerationParams(top_p=0)
