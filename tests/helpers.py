"""Test doubles: a scripted `Policy`, a fake retriever and a fake embedder, plus tiny tokenizers.

MockPolicy tokenizes one character per token (id = code point + 10; 1 is EOS), so token
counts equal character counts and the transcript can be read back exactly.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from policy.base import GenerationDelta, GenerationParams, Policy, PromptTooLongError

EOS = 1


class MockPolicy(Policy):
    """`script(prompt_text, kind)` → (text, entropy per token, ends_with_eos).

    kind is "draft" (after the assistant header), "step" (inside <think>) or "probe"/"answer"
    (after </think>); the policy records every call as (kind, prompt_text, params).
    """

    name = "mock"
    max_context = 100_000
    eos_token_ids = (EOS,)
    special_tokens = ("<|im_end|>", "<|im_start|>")

    def __init__(self, script: Callable[[str, str], tuple[str, float, bool]], token_delay_s: float = 0.0):
        self.script = script
        self.token_delay_s = token_delay_s  # > 0: each token takes this long (overload, deadline tests)
        self.generated_tokens = 0  # tokens handed out so far, counted as they go
        self.calls: list[tuple[str, str, GenerationParams]] = []

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) + 10 for c in text]

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(chr(i - 10) for i in ids if i >= 10)

    def chat_prompt(self, messages, add_generation_prompt=True) -> list[int]:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return self.tokenize(text + ("<|im_start|>assistant\n" if add_generation_prompt else ""))

    @staticmethod
    def kind_of(prompt: str) -> str:
        turn = prompt.rsplit("<|im_start|>assistant\n", 1)[-1]
        if "</think>" in turn:
            return "after_think"
        if "<think>" in turn:
            return "step"
        return "draft"

    async def stream(self, prompt, params: GenerationParams):
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if len(ids) + params.max_tokens > self.max_context:
            raise PromptTooLongError(len(ids), params.max_tokens, self.max_context)
        text = self.detokenize(ids)
        kind = self.kind_of(text)
        self.calls.append((kind, text, params))
        out, entropy, eos = self.script(text, kind)
        toks = self.tokenize(out) + ([EOS] if eos else [])
        sent = ""
        for i, t in enumerate(toks[: params.max_tokens]):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            self.generated_tokens += 1
            sent += self.detokenize([t])
            last = i == len(toks) - 1 or i == params.max_tokens - 1
            reason = EOS if t == EOS else None
            hit = next((s for s in params.stop if s and s in sent), None)
            if hit:
                reason, last = hit, True
            finish = ("stop" if reason is not None else "length") if last else None
            yield GenerationDelta(self.detokenize([t]), [t], [entropy], [0.0], finish, reason, len(ids), 0)
            if last:
                return


class FakeHit:
    def __init__(self, id, source, heading, text, score):
        self.id, self.source, self.heading, self.text, self.score = id, source, heading, text, score


class FakeRetriever:
    """Returns `docs` (id, source, heading, text) ranked by shared words with the query."""

    def __init__(self, docs: list[tuple[int, str, str, str]]):
        self.docs = docs
        self.queries: list[str] = []

    def search(self, query: str, k: int = 5):
        self.queries.append(query)
        q = set(query.lower().split())
        scored = sorted(self.docs, key=lambda d: -len(q & set(d[3].lower().split())))
        return [FakeHit(d[0], d[1], d[2], d[3], 1.0 / (i + 1)) for i, d in enumerate(scored[:k])]

    async def asearch(self, query: str, k: int = 5):
        return self.search(query, k)


def word_piece_tokenizer():
    """A tiny BERT-style fast tokenizer trained in memory (no network)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = ["the quick brown fox jumps over the lazy dog " * 3, "python lists tuples dicts sets functions classes",
              "a list comprehension builds a list; len returns the length of an object."]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", model_max_length=10**6)


class FakeEmbedder:
    """Bag-of-words hashing embedder: unit float32 vectors of size `dim`; deterministic."""

    name = "fake-embedder"

    def __init__(self, dim: int = 32, max_tokens: int = 128):
        self.dim, self.max_tokens = dim, max_tokens
        self.tokenizer = word_piece_tokenizer()
        self.calls = 0

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[i] /= max(np.linalg.norm(out[i]), 1e-6)
        return out

    def encode_query(self, text: str) -> np.ndarray:
        """`encode` of one text, [dim] (the `Embedder` query interface)."""
        return self.encode([text])[0]


def byte_bpe_tokenizer():
    """A tiny byte-level BPE chat tokenizer (ChatML template, <|im_end|> as EOS), trained in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the answer is 42. <think> </think> <search> python lists"] * 5, trainer)
    t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                unk_token="<|endoftext|>", pad_token="<|im_end|>")
    t.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                       "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return t


def tiny_llama(vocab_size: int, seed: int = 0, hidden_size: int = 32, max_positions: int = 512):
    """A 2-layer random-init Llama (about 100k parameters at hidden_size 32; 4 heads, so head size
    hidden_size / 4: onnxruntime's GroupQueryAttention needs a multiple of 16, i.e. hidden_size 64)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


async def check_prefix_cache_rollback(p, entropy_approx) -> None:
    """The `policy.local.LocalPolicy` cache contract on backend `p`: a continued transcript is served
    from the cache, a probe on a branch is rolled back, and warm, rolled-back and cold runs agree
    (token ids exactly, entropies within `entropy_approx`, e.g. ``dict(rel=1e-4)``)."""
    import pytest

    ids = p.chat_prompt([{"role": "user", "content": "the answer is"}])
    p.reset_cache()
    first = await p.generate(ids, GenerationParams(max_tokens=8))
    assert first.cached_tokens == 0
    # continue the transcript: everything before is served from the cache
    cont = ids + first.token_ids
    warm = await p.generate(cont, GenerationParams(max_tokens=6))
    assert warm.cached_tokens == len(cont) - 1
    # a probe on a branch, then back to the trunk: the cache is rolled back, results unchanged
    await p.generate(cont + p.tokenize(" </think>"), GenerationParams(max_tokens=4))
    again = await p.generate(cont, GenerationParams(max_tokens=6))
    assert again.cached_tokens >= len(cont) - 1
    p.reset_cache()
    cold = await p.generate(cont, GenerationParams(max_tokens=6))
    assert cold.cached_tokens == 0
    assert again.token_ids == cold.token_ids == warm.token_ids
    assert again.entropies == pytest.approx(cold.entropies, **entropy_approx)


class ServerProcess:
    """A real server started as a subprocess on `port`, its output in `log` (the integration tests'
    replicas and llama-server): `wait_ready` polls `health_url` until it answers 200 and fails with the
    log's tail when the process exits or the time runs out.

    Args:
        cmd: the command line; port: its port; log: file for stdout + stderr; env, cwd: as for Popen.
    """

    def __init__(self, cmd: list[str], port: int, log, env: dict | None = None, cwd=None):
        import subprocess

        self.port, self.base = port, f"http://127.0.0.1:{port}"
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def _tail(self) -> str:
        with open(self.log.name) as fh:
            return fh.read()[-3000:]

    def wait_ready(self, health_path: str, timeout: float, interval: float = 0.3) -> None:
        """Raises: RuntimeError (the process exited) or TimeoutError, with the log's tail."""
        import time

        import httpx

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[0]} exited {self.proc.returncode}: {self._tail()}")
            try:
                if httpx.get(self.base + health_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(interval)
        raise TimeoutError(self._tail())

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM and wait 20 s (then SIGKILL), or SIGKILL at once; closes the log."""
        import subprocess

        if self.proc.poll() is None:
            if graceful:
                self.proc.terminate()
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            else:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def tiny_qwen2(vocab_size: int, seed: int = 0, hidden_size: int = 64, max_positions: int = 512):
    """A 2-layer random-init Qwen2 (the architecture of Qwen2.5: biased q/k/v projections, untied
    embeddings as in the dequantized GGUF; 4 heads of 16, 2 KV heads for onnxruntime's GQA)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=max_positions, tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).eval()


def run_tiny_grpo(tmp_path, ckpt, script, spy, max_completion_length: int = 64) -> tuple[dict, dict]:
    """Two GRPO steps of `training.grpo.run` on the tiny checkpoint `ckpt` with `script`, the reward
    ``test_spy`` = `spy` registered for the run (name it in ``script.reward_funcs``); output in
    ``tmp_path / "out"``. Returns (state dict before, after)."""
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, ModelConfig

    from training.grpo import run
    from training.rewards import REWARDS

    cfg = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, max_steps=2,
                     per_device_train_batch_size=4, num_generations=2, max_completion_length=max_completion_length,
                     learning_rate=1e-2, beta=0.0, logging_steps=1, save_strategy="no", report_to="none", seed=0)
    before = AutoModelForCausalLM.from_pretrained(ckpt).state_dict()
    REWARDS["test_spy"] = spy
    try:
        run(script, cfg, ModelConfig(model_name_or_path=str(ckpt)))
    finally:
        REWARDS.pop("test_spy")
    return before, AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
