"""The fast CPU backend: onnxruntime-genai over a quantized export, exact entropy every token.

Contract:
- `export_onnx(checkpoint, precision)` converts a transformers checkpoint dir (the registry's
  dequantized SmolLM2 or anything `training` writes) with onnxruntime-genai's model builder,
  offline, once: the result is cached under ``<cache_dir>/onnx/<name>-<key>-<precision>``,
  keyed by the checkpoint's path, size and mtime, and written atomically under a file lock.
  Precisions: ``int8`` (the default), ``int4`` (MatMulNBits, block 32) and ``fp32`` (the
  reference). Measured with `policy.bench` on 2 cores (663-token prompt, 64 tokens, medians of 5):
  decode with exact entropy int8 6.4×, int4 7.9×, fp32 3.9× transformers fp32; entropy costs
  1–2.5 % of decode; mean |ΔH| against transformers fp32 over the shared greedy prefix int8
  0.02 nats (31/64 tokens identical), int4 0.16 (differs from the first token), fp32 0.0000
  (64/64). int8 is the default: ≥ 4× with 8× less entropy shift than int4, so thresholds
  calibrated on fp32 transfer best.
- `OnnxPolicy` is a `policy.local.LocalPolicy`: the slot state is an onnxruntime-genai
  ``Generator`` (its KV cache), rolled back with ``rewind_to``; each step feeds tokens with
  ``append_tokens`` and reads the full next-token logits with ``get_logits``, so the entropy
  is exact (`numpy_entropy`, over all 49,152 logits) and token picking stays ours (greedy,
  or temperature + top-p from a seeded numpy generator), exactly as in `TransformersPolicy`.
- The chat template, tokenizer and EOS set come from the source checkpoint (what training saw).
- Errors: `ImportError` naming the pip package when onnxruntime-genai is missing; `RuntimeError`
  with the builder's last lines when an export fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from policy.base import GenerationParams
from policy.entropy import numpy_entropy
from policy.local import LocalPolicy, Slot, special_tokens
from policy.modes import eos_token_ids
from policy.models import _file_lock, cache_dir, export_key

PRECISIONS = ("int4", "int8", "fp32")
SOURCE_FILE = "thinkgate_source.json"  # what an export was made from


def _og():
    try:
        import onnxruntime_genai as og
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the onnx backend needs onnxruntime-genai: pip install onnxruntime-genai onnx onnx_ir") from exc
    return og


def export_onnx(checkpoint: str | Path, precision: str = "int8", root: Path | None = None, log=print) -> Path:
    """The onnxruntime-genai export of `checkpoint` at `precision` (built once, then cached).

    Args:
        checkpoint: a transformers checkpoint dir (config.json + safetensors).
        precision: "int4", "int8" or "fp32".
        root: cache root (default `policy.models.cache_dir()`).
        log: called with one line when an export starts.

    Returns:
        The export dir (``genai_config.json``, ``model.onnx``, ``thinkgate_source.json``).

    Raises:
        ValueError: unknown precision or not a checkpoint dir.
        RuntimeError: the builder failed (its last output lines are in the message).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    ckpt = Path(checkpoint).resolve()
    if not (ckpt / "config.json").is_file():
        raise ValueError(f"{checkpoint} is not a checkpoint dir (no config.json)")
    out = Path(root or cache_dir()).expanduser() / "onnx" / f"{ckpt.name}-{export_key(ckpt)}-{precision}"
    if (out / SOURCE_FILE).is_file():
        return out
    with _file_lock(out.parent / f".{out.name}.lock"):
        if (out / SOURCE_FILE).is_file():
            return out
        log(f"exporting {ckpt} to onnxruntime-genai {precision} (once) → {out}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(ckpt), "-o", str(tmp / "m"),
                   "-p", precision, "-e", "cpu", "-c", str(tmp / "cache")]
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode != 0 or not (tmp / "m" / "genai_config.json").is_file():
                tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-8:])
                raise RuntimeError(f"onnx export of {ckpt} ({precision}) failed:\n{tail}")
            (tmp / "m" / SOURCE_FILE).write_text(json.dumps({"checkpoint": str(ckpt), "precision": precision,
                                                              "key": export_key(ckpt)}, indent=2))
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp / "m", out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


class OnnxPolicy(LocalPolicy):
    """A causal LM served with onnxruntime-genai on the CPU (see the module contract).

    Args:
        export_dir: an `export_onnx` result (or any onnxruntime-genai model dir).
        checkpoint: the transformers checkpoint it came from (tokenizer, chat template, EOS ids);
            default: the one recorded in ``thinkgate_source.json``.
        name: the served model name.
        cache_slots: prefix caches kept (one onnxruntime-genai Generator each).
        threads: intra-op threads of the session; default: all cores.
        max_context: context window (tokens); each slot preallocates a KV buffer this long.
            Default: the model's, capped at 4096.
    """

    backend = "onnx"

    def __init__(self, export_dir: str | Path, checkpoint: str | Path | None = None, *, name: str | None = None,
                 cache_slots: int = 4, threads: int | None = None, max_context: int | None = None):
        from transformers import AutoTokenizer, GenerationConfig

        og = _og()
        export_dir = Path(export_dir)
        source = export_dir / SOURCE_FILE
        meta = json.loads(source.read_text()) if source.is_file() else {}
        checkpoint = Path(checkpoint or meta.get("checkpoint") or export_dir)
        self.precision = self.weights = meta.get("precision", "unknown")
        config = og.Config(str(export_dir))
        threads = threads or os.cpu_count() or 1
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)
        self.tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        genai = json.loads((export_dir / "genai_config.json").read_text())["model"]
        self.name = name or checkpoint.name
        self.max_context = int(max_context or min(int(genai.get("context_length", 2048)), 4096))
        try:
            gen_cfg = GenerationConfig.from_pretrained(str(checkpoint))
        except OSError:
            gen_cfg = None
        eos = eos_token_ids(SimpleNamespace(generation_config=gen_cfg), self.tokenizer)
        extra = genai.get("eos_token_id")
        eos |= set(extra if isinstance(extra, list) else [extra]) - {None}
        self.eos_token_ids = tuple(sorted(eos))
        self.special_tokens = special_tokens(self.tokenizer)
        self.vocab_size = int(genai.get("vocab_size", len(self.tokenizer)))
        self.export_dir = export_dir
        self._og = og
        self._init_slots(cache_slots)

    # ---------------------------------------------------------------- LocalPolicy hooks
    def _new_state(self, old=None):
        if old is not None:  # a Generator preallocates its KV buffer (max_context long): clear and reuse it
            old.rewind_to(0)
            return old
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.max_context)
        return self._og.Generator(self.model, params)

    def _rollback(self, slot: Slot, keep: int) -> None:
        slot.state.rewind_to(keep)

    def _forward(self, slot: Slot, ids: list[int]) -> np.ndarray:
        slot.state.append_tokens(np.asarray(ids, dtype=np.int32))
        return slot.state.get_logits()[0, -1]

    def _entropy(self, logits: np.ndarray) -> tuple[float, float]:
        return numpy_entropy(logits)

    def _rng(self, seed: int):
        return np.random.default_rng(seed)

    def _pick(self, logits: np.ndarray, params: GenerationParams, rng) -> int:
        """Greedy argmax at temperature 0, else a temperature + top-p sample drawn with `rng`."""
        if params.temperature <= 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / params.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        if params.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            sp = p[order]
            keep = np.cumsum(sp) - sp < params.top_p
            sp = sp * keep
            return int(order[rng.choice(len(sp), p=sp / sp.sum())])
        return int(rng.choice(len(p), p=p))

    def engine_generate(self, ids: list[int], n: int) -> tuple[float, list[float]]:
        """onnxruntime-genai's own greedy loop, the baseline of the benchmarks: no logits read, no
        entropy, no prefix cache; exactly `n` new tokens after `ids`. Blocking.

        Returns:
            (start, stamps): `time.perf_counter()` before the prompt is fed, and after each token.
        """
        import time

        params = self._og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        gen = self._og.Generator(self.model, params)
        start = time.perf_counter()
        gen.append_tokens(np.asarray(ids, dtype=np.int32))
        stamps = []
        for _ in range(n):
            gen.generate_next_token()
            stamps.append(time.perf_counter())
        return start, stamps

    async def health(self) -> dict:
        return {"status": "ok", "model": self.name, "backend": "onnx", "precision": self.precision,
                "device": "cpu", **self.stats}
