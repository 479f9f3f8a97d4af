"""The query fast path: the embedder's transformer exported to ONNX (fp32) and run by onnxruntime.

Contract:
- `OnnxQueryEncoder.load(model)` takes a float32 `SentenceTransformer` whose modules are
  Transformer → mean Pooling → Normalize (all-MiniLM-L6-v2's), exports its transformer to
  ``<cache_dir>/onnx/<name>-<key>-query-fp32/model.onnx`` once (legacy TorchScript
  exporter, opset 17, dynamic batch and length; under a file lock, written atomically) and checks
  the export against the torch model on `PROBES` before keeping it: cosine ≥ `MIN_COSINE`, else
  `ExportMismatchError` and no file. Later loads read the file (≈ 0.2 s).
- `encode(text)` → the unit float32 embedding [dim] of one text, truncated to the model's
  `max_seq_length` word pieces: the same vector as sentence-transformers' fp32 ``encode``
  (cosine 1.000 on 50 written questions) in ≈ 3 ms instead of ≈ 8 ms for the int8 torch model
  and ≈ 10 ms for fp32 torch on 2 cores (docs/results/retrieval-eval/latency-path.md). One text, no padding:
  a query is embedded alone; batched ingest stays on torch int8 (faster there: 89 against 24
  chunks/s measured for onnxruntime fp32).
- Why not sentence-transformers' ``backend="onnx"``: it needs optimum, whose ONNX package pins
  transformers < 5.
- Thread-safe: searches on several threads may share one encoder.
- Errors: `ValueError` when the model is not Transformer + mean Pooling (+ Normalize);
  `ExportMismatchError` as above.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

#: texts the export is checked on: short and long, punctuation, a word-piece split
PROBES = ("How do I copy a file?",
          "The with statement wraps the execution of a block with methods defined by a context manager; "
          "see PEP 343 for __enter__ and __exit__.")
#: the least cosine between the ONNX and torch fp32 embeddings of a probe for the export to be kept
MIN_COSINE = 0.9999
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ExportMismatchError(RuntimeError):
    """The ONNX export does not reproduce the torch model's embeddings."""


def _check_layout(model) -> None:
    names = [type(m).__name__ for m in model]
    pooling = model[1] if len(model) > 1 else None
    mode = getattr(pooling, "pooling_mode", None) or ("mean" if getattr(pooling, "pooling_mode_mean_tokens", False)
                                                      else None)
    if names[:2] != ["Transformer", "Pooling"] or mode != "mean" or any(n != "Normalize" for n in names[2:]):
        raise ValueError(f"the ONNX query path needs Transformer + mean Pooling (+ Normalize), got {names} "
                         f"(pooling {mode!r})")


class OnnxQueryEncoder:
    """One-text embeddings from an onnxruntime session over the exported transformer.

    Args:
        path: the exported ``model.onnx``.
        tokenizer: the model's (fast) tokenizer.
        max_tokens: truncation length in word pieces (the model's `max_seq_length`).
        threads: onnxruntime intra-op threads (None: its default, the physical cores).
    """

    def __init__(self, path: str | Path, tokenizer, max_tokens: int, threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.path, self.tokenizer, self.max_tokens = Path(path), tokenizer, max_tokens
        # a fast tokenizer called with truncation settings from two threads at once can raise
        # "Already borrowed" (searches run on worker threads); the session itself is thread-safe
        self._tok_lock = threading.Lock()
        self._wants = {i.name for i in self.session.get_inputs()}

    @classmethod
    def load(cls, model, model_dir: str | Path, root: Path | None = None, name: str | None = None
             ) -> "OnnxQueryEncoder":
        """The encoder for a float32 `SentenceTransformer` loaded from `model_dir`, exporting it
        first when the cache has no checked export (see the module contract). `root`: the cache
        root (default `policy.models.cache_dir()`); `name`: the export's folder prefix (default
        the model dir's name).

        Raises:
            ValueError: the model is not Transformer + mean Pooling (+ Normalize).
            ExportMismatchError: the export's embeddings differ from the torch model's.
        """
        from policy.models import _file_lock, cache_dir, export_key

        _check_layout(model)
        folder = f"{name or Path(model_dir).name}-{export_key(model_dir)}-query-fp32"
        out = Path(root or cache_dir()).expanduser() / "onnx" / folder
        if not (out / "model.onnx").is_file():
            with _file_lock(out.parent / f".{out.name}.lock"):
                if not (out / "model.onnx").is_file():
                    cls._export(model, out)
        return cls(out / "model.onnx", model.tokenizer, int(model.max_seq_length))

    @classmethod
    def _export(cls, model, out: Path) -> None:
        import torch

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            hf = model[0].auto_model.eval()

            class Body(torch.nn.Module):
                def __init__(self, m):
                    super().__init__()
                    self.m = m

                def forward(self, input_ids, attention_mask, token_type_ids):
                    return self.m(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state

            enc = dict(model.tokenizer([PROBES[0]], return_tensors="pt"))
            enc.setdefault("token_type_ids", torch.zeros_like(enc["input_ids"]))
            axes = {k: {0: "batch", 1: "tokens"} for k in (*_INPUTS, "last_hidden_state")}
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
                torch.onnx.export(Body(hf), tuple(enc[k] for k in _INPUTS), str(tmp / "model.onnx"),
                                  input_names=list(_INPUTS), output_names=["last_hidden_state"],
                                  dynamic_axes=axes, opset_version=17, dynamo=False)
            enc_onnx = cls(tmp / "model.onnx", model.tokenizer, int(model.max_seq_length))
            ref = model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True)
            cos = [float(enc_onnx.encode(t) @ r) for t, r in zip(PROBES, ref)]
            if min(cos) < MIN_COSINE:
                raise ExportMismatchError(f"the ONNX export's embeddings differ from torch's: cosine {min(cos):.5f} "
                                          f"< {MIN_COSINE}")
            del enc_onnx
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def encode(self, text: str) -> np.ndarray:
        """The unit float32 embedding [dim] of `text` (mean of the last hidden states, L2-normalised)."""
        with self._tok_lock:
            b = self.tokenizer([text], return_tensors="np", truncation=True, max_length=self.max_tokens)
        feed = {k: np.asarray(b[k], dtype=np.int64) for k in _INPUTS if k in self._wants and k in b}
        if "token_type_ids" in self._wants and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        h = self.session.run(None, feed)[0][0]  # [tokens, dim]; one unpadded text: a plain mean
        v = h.mean(axis=0)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
