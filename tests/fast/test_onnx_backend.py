"""The onnxruntime-genai backend on a tiny random Llama, exported unquantized (fp32) in the test:
same greedy tokens and entropies as the transformers reference, prefix cache and rollback,
the export cached per checkpoint."""
import pytest

pytest.importorskip("onnxruntime_genai")

from policy.base import GenerationParams, PromptTooLongError  # noqa: E402
from tests.helpers import check_prefix_cache_rollback  # noqa: E402

ENTROPY_TOL = 1e-4  # nats, fp32 export vs transformers fp32 (measured: ~1e-6 on the tiny model)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """(OnnxPolicy, TransformersPolicy, checkpoint dir, cache root) over the same tiny checkpoint."""
    from policy.onnx_backend import OnnxPolicy, export_onnx
    from policy.transformers_backend import TransformersPolicy
    from tests.helpers import byte_bpe_tokenizer, tiny_llama

    tok = byte_bpe_tokenizer()
    ckpt = tmp_path_factory.mktemp("tiny")
    tiny_llama(len(tok), hidden_size=64).save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    root = tmp_path_factory.mktemp("cache")
    export = export_onnx(ckpt, "fp32", root, log=lambda m: None)
    onnx = OnnxPolicy(export, name="tiny", cache_slots=2, threads=1)
    ref = TransformersPolicy(str(ckpt), name="tiny", device="cpu", cache_slots=2, threads=1)
    return onnx, ref, ckpt, root


async def test_fp32_export_gives_the_reference_tokens_and_entropies(tiny_pair):
    onnx, ref, _, _ = tiny_pair
    for text in ("hello world", "the answer is", "what is 2 + 3?"):
        ids = onnx.chat_prompt([{"role": "user", "content": text}])
        assert ids == ref.chat_prompt([{"role": "user", "content": text}])  # tokenizer of the checkpoint
        a = await onnx.generate(ids, GenerationParams(max_tokens=16))
        b = await ref.generate(ids, GenerationParams(max_tokens=16))
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.entropies, b.entropies)) < ENTROPY_TOL
        assert a.entropy_method == "exact" and len(a.varentropies) == len(a.token_ids)
    assert onnx.backend == "onnx" and onnx.weights == "fp32" and ref.weights == "fp32"
    assert onnx.eos_token_ids == ref.eos_token_ids


async def test_prefix_cache_and_rewind_give_cold_results(tiny_pair):
    await check_prefix_cache_rollback(tiny_pair[0], dict(abs=1e-5))  # rolled back with rewind_to


async def test_sampling_is_seeded_and_limits_are_checked(tiny_pair):
    p = tiny_pair[0]
    ids = p.chat_prompt([{"role": "user", "content": "hello"}])
    params = GenerationParams(max_tokens=12, temperature=1.5, top_p=0.9, seed=7)
    a, b = await p.generate(ids, params), await p.generate(ids, params)
    assert a.token_ids == b.token_ids
    other = await p.generate(ids, GenerationParams(max_tokens=12, temperature=1.5, seed=8))
    greedy = await p.generate(ids, GenerationParams(max_tokens=12))
    assert other.token_ids != a.token_ids or greedy.token_ids != a.token_ids
    with pytest.raises(PromptTooLongError):
        await p.generate(ids, GenerationParams(max_tokens=p.max_context))


def test_export_is_cached_and_keyed_by_the_weights(tiny_pair, tmp_path):
    from policy.onnx_backend import export_key, export_onnx

    _, _, ckpt, root = tiny_pair
    calls = []
    again = export_onnx(ckpt, "fp32", root, log=calls.append)
    assert calls == [] and (again / "genai_config.json").is_file()  # second call: no export
    (ckpt / "model.safetensors").touch()  # weights changed (e.g. a new training step): a new export key
    assert export_key(ckpt) not in again.name
    with pytest.raises(ValueError, match="precision must be one of"):
        export_onnx(ckpt, "int3", root)
    with pytest.raises(ValueError, match="not a checkpoint dir"):
        export_onnx(tmp_path, "int4", root)



def test_engine_loop_baseline_makes_exactly_n_tokens(tiny_pair):
    """The benchmarks' baseline (onnxruntime-genai's own loop) times exactly n tokens."""
    p = tiny_pair[0]
    start, stamps = p.engine_generate(p.chat_prompt([{"role": "user", "content": "hello"}]), 7)
    assert len(stamps) == 7 and start < stamps[0] <= stamps[-1]
