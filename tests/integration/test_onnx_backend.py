"""Integration: the real SmolLM2-135M on the onnx backend against the transformers reference.
Unquantized (fp32 export): the same greedy tokens and entropies within 1e-3 nats. int8 (the CPU
default): the entropy shift stays within the tolerance the calibration warning is about."""
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("onnxruntime_genai")

FP32_TOL = 1e-3    # nats per token, fp32 export vs transformers fp32
INT8_TOL = 0.1     # nats, mean |ΔH| over the shared greedy prefix, int8 vs fp32 (policy.bench: 0.02)


@pytest.fixture(scope="module")
def engines():
    from policy.models import TEST_POLICY, load_policy

    ref = load_policy(TEST_POLICY, backend="transformers", device="cpu", cache_slots=1)
    return ref, {p: load_policy(TEST_POLICY, backend="onnx", precision=p, cache_slots=1) for p in ("fp32", "int8")}


async def test_fp32_export_matches_transformers_and_int8_stays_close(engines):
    from policy.base import GenerationParams

    ref, onnx = engines
    for q in ("What is a Python list comprehension?", "What is 37 times 49 minus 18?"):
        ids = ref.chat_prompt([{"role": "user", "content": q}])
        a = await ref.generate(ids, GenerationParams(max_tokens=32))
        b = await onnx["fp32"].generate(ids, GenerationParams(max_tokens=32))
        assert b.token_ids == a.token_ids
        assert max(abs(x - y) for x, y in zip(a.entropies, b.entropies)) < FP32_TOL
        c = await onnx["int8"].generate(ids, GenerationParams(max_tokens=32))
        n = next((i for i, (x, y) in enumerate(zip(a.token_ids, c.token_ids)) if x != y), len(c.token_ids))
        n = max(n, 1)
        assert sum(abs(x - y) for x, y in zip(a.entropies[:n], c.entropies[:n])) / n < INT8_TOL
    assert onnx["int8"].weights == "int8" and onnx["int8"].backend == "onnx"
