"""Both model families without weights: a tiny random Qwen2 (ChatML, two EOS ids, ``<think>`` as
plain text) served by the transformers and the onnx backend and run through the agent, with the
forced direct answer (``answer_prefix``) the Qwen models' gate reads."""
import pytest

from agent.config import AgentConfig
from agent.runner import Agent
from policy.base import GenerationParams
from tasks.prompt import build_messages

pytest.importorskip("onnxruntime_genai")


@pytest.fixture(scope="module")
def qwen_pair(tmp_path_factory):
    """(OnnxPolicy fp32, TransformersPolicy) over one tiny Qwen2 checkpoint whose generation config
    lists two EOS ids, as `policy.models.prepare_gguf` writes the Qwen ones."""
    from policy.onnx_backend import OnnxPolicy, export_onnx
    from policy.transformers_backend import TransformersPolicy
    from tests.helpers import byte_bpe_tokenizer, tiny_qwen2

    tok = byte_bpe_tokenizer()
    ckpt = tmp_path_factory.mktemp("qwen2")
    model = tiny_qwen2(len(tok))
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos[1]
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    export = export_onnx(ckpt, "fp32", tmp_path_factory.mktemp("cache"), log=lambda m: None)
    onnx = OnnxPolicy(export, name="tiny-qwen2", cache_slots=2, threads=1)
    ref = TransformersPolicy(str(ckpt), name="tiny-qwen2", device="cpu", cache_slots=2, threads=1)
    return onnx, ref, eos


async def test_qwen2_export_matches_the_reference_and_both_eos_end_a_turn(qwen_pair):
    onnx, ref, eos = qwen_pair
    assert set(eos) <= set(onnx.eos_token_ids) and set(eos) <= set(ref.eos_token_ids)
    assert onnx.vocab_size == ref.model.config.vocab_size
    ids = onnx.chat_prompt([{"role": "user", "content": "what is 2 + 3?"}])
    a = await onnx.generate(ids, GenerationParams(max_tokens=12))
    b = await ref.generate(ids, GenerationParams(max_tokens=12))
    assert a.token_ids == b.token_ids
    assert max(abs(x - y) for x, y in zip(a.entropies, b.entropies)) < 1e-4


class Spy:
    """Records the prompt ids of every generate call of a policy (and delegates everything)."""

    def __init__(self, policy):
        self._p, self.prompts = policy, []

    def __getattr__(self, name):
        return getattr(self._p, name)

    async def generate(self, prompt, params, on_text=None):
        self.prompts.append(list(prompt))
        return await self._p.generate(prompt, params, on_text=on_text)


@pytest.mark.parametrize("backend", ["onnx", "transformers"])
async def test_the_agent_forces_the_direct_answer_on_qwen2(qwen_pair, backend):
    onnx, ref, _ = qwen_pair
    pol = Spy(onnx if backend == "onnx" else ref)
    lead = pol.tokenize("Answer:")
    cfg = AgentConfig(answer_prefix="Answer:", draft_tokens=4, step_tokens=6, max_steps=2, max_think_tokens=12)
    agent = Agent(pol, None, cfg)
    msgs = [{"role": "user", "content": "hello world"}]
    turn = await agent.run(msgs, effort="none", max_tokens=10)
    prompt = pol.chat_prompt(build_messages("hello world", []))
    assert pol.prompts[0] == prompt + lead  # the gate drafts the forced direct answer
    assert turn.decision == "answer" and not turn.answer.startswith("Answer:")
    assert turn.transcript[len(prompt): len(prompt) + len(lead)] == lead  # kept as prompt, not as answer
    assert turn.tokens.completion <= 10
    pol.prompts.clear()
    turn = await agent.run(msgs, effort="high", max_tokens=40)
    assert turn.decision == "think" and turn.metadata["steps"]
    think = pol.tokenize("<think>\n")
    assert pol.prompts[0][: len(prompt) + len(think)] == prompt + think
    probes = [p for p in pol.prompts if p[-len(lead):] == lead]
    assert probes, "every probe and the answer after </think> start with the forced prefix"
    assert turn.tokens.completion <= 40
    turn = await agent.run(msgs, effort="auto", max_tokens=20)  # a random model: either path, within budget
    assert turn.decision in ("answer", "think") and turn.tokens.completion <= 20
