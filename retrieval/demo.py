"""The demo corpus: the Python documentation.

Contract: `demo_corpus()` returns a folder of documents. Preferred: the reST sources of the
Debian package ``python3.11-doc`` (``/usr/share/doc/python3.11/html/_sources``, 497 files).
Where that is not installed, a fallback is written once under ``<cache>/demo-corpus``: the
language reference topics shipped with the interpreter (`pydoc_data.topics`) and the
docstrings of the standard library's pure-Python modules, one text file each.
"""
from __future__ import annotations

import glob
import importlib
import inspect
import os
import pkgutil
import re
import sys
from pathlib import Path

DEBIAN_GLOB = "/usr/share/doc/python3*/html/_sources"


def debian_docs() -> Path | None:
    """The newest installed Debian python3.X-doc reST folder, or None."""
    found = []
    for p in glob.glob(DEBIAN_GLOB):
        m = re.search(r"/python3\.(\d+)/html/_sources$", p)
        if m:
            found.append((int(m.group(1)), p))
    return Path(max(found)[1]) if found else None


def _module_doc(name: str) -> str | None:
    try:
        mod = importlib.import_module(name)
    except Exception:  # modules that need a platform or a display
        return None
    parts = [f"{name}\n{'=' * len(name)}\n\n{inspect.getdoc(mod) or ''}"]
    for attr, obj in sorted(vars(mod).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            doc = inspect.getdoc(obj)
            if doc:
                try:
                    sig = str(inspect.signature(obj))
                except (TypeError, ValueError):
                    sig = "(...)"
                parts.append(f"{name}.{attr}{sig}\n{'-' * 20}\n\n{doc}")
    text = "\n\n".join(parts)
    return text if len(text) > 200 else None


def write_fallback(out: Path) -> Path:
    """Write the interpreter-shipped docs to `out` (``topics/*.txt``, ``modules/*.rst``); returns `out`."""
    from pydoc_data.topics import topics

    tmp = out.with_name(out.name + ".tmp")
    (tmp / "topics").mkdir(parents=True, exist_ok=True)
    (tmp / "modules").mkdir(parents=True, exist_ok=True)
    for name, text in topics.items():
        (tmp / "topics" / f"{name}.txt").write_text(f"{name}\n\n{text}")
    skip = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "test", "ensurepip"}
    names = sorted(m.name for m in pkgutil.iter_modules() if m.name in sys.stdlib_module_names and m.name not in skip)
    for name in names:
        doc = _module_doc(name)
        if doc:
            (tmp / "modules" / f"{name}.rst").write_text(doc)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def demo_corpus(cache: Path) -> Path:
    """Folder of the demo documents (see the module docstring); `cache` holds the fallback."""
    found = debian_docs()
    if found is not None:
        return found
    out = Path(cache) / "demo-corpus"
    return out if out.is_dir() else write_fallback(out)
