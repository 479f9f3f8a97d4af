"""``python -m evals.rescore FILE…``: score stored rows again with the tasks' current references.

When a task's reference answers are corrected (``tasks.numeric``: multi-digit answers with the usual
precedence), the generated texts stay valid and only their scores change; this re-derives them
without generating anything again.

Contract:
- Rows of the numeric sets (`tasks.numeric.SETS`; ids ``<set>-s<seed>-<index>``) are scored again by
  their family's scorer (`tasks.family(item).score`, the reward) against the item rebuilt from its
  id: ``direct_text`` → ``direct_score`` and ``think_text`` → ``think_score`` (`evals.forced` rows,
  ``evals.quality run``), ``text`` → ``score`` (``evals.learned run``); ``meta.answer`` becomes the
  current reference. Other rows are left as they are.
- A JSONL file is rewritten only when a row changed (a score or ``meta.answer``). Prints, per file, how many rows changed score.
- Raises LookupError for a row whose item cannot be rebuilt (the id names no item any more).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

_ID = re.compile(r"^(?P<set>.+)-s(?P<seed>\d+)-(?P<idx>\d+)$")
_FIELDS = (("direct_text", "direct_score"), ("think_text", "think_score"), ("text", "score"))


def rescore_rows(rows: list[dict]) -> int:
    """Rescore `rows` in place (module contract); returns how many rows changed a score."""
    from tasks import family, load_items
    from tasks.numeric import SETS

    need: dict[tuple[str, int], int] = {}
    for r in rows:
        m = _ID.match(str(r.get("id", "")))
        if m and m["set"] in SETS:
            key = (m["set"], int(m["seed"]))
            need[key] = max(need.get(key, 0), int(m["idx"]) + 1)
    items = {it.id: it for (name, seed), n in need.items() for it in load_items(name, n, seed)}
    changed = 0
    for r in rows:
        m = _ID.match(str(r.get("id", "")))
        if not m or m["set"] not in SETS:
            continue
        it = items.get(r["id"])
        if it is None:
            raise LookupError(f"row {r['id']!r} has no item any more")
        before = [r.get(score) for _, score in _FIELDS]
        for text, score in _FIELDS:
            if text in r and score in r:
                r[score] = family(it).score(r[text], it)
        if isinstance(r.get("meta"), dict) and "answer" in r["meta"]:
            r["meta"]["answer"] = it.answer
        changed += before != [r.get(score) for _, score in _FIELDS]
    return changed


def rescore_file(path: Path) -> int:
    """Rescore one ``.jsonl`` of rows in place; returns rows changed. Raises ValueError for another kind of file."""
    if path.suffix != ".jsonl":
        raise ValueError(f"rows are .jsonl files, got {path}")
    text = path.read_text()
    rows = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    n = rescore_rows(rows)
    new = "".join(json.dumps(r) + "\n" for r in rows)
    if new != text:  # a score or a stated reference changed
        path.write_text(new)
    return n


def main(argv: list[str] | None = None) -> None:
    """CLI entry; a missing file exits 2 with a one-line message."""
    from evals.cli import dispatch

    ap = argparse.ArgumentParser(prog="python -m evals.rescore", description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="row files (.jsonl)")

    def run(args) -> None:
        for f in args.files:
            p = Path(f)
            if not p.is_file():
                raise FileNotFoundError(f"no such row file {f}")
            print(f"{f}: {rescore_file(p)} rows changed score")

    ap.set_defaults(cmd="run")
    dispatch(ap, {"run": run}, argv)


if __name__ == "__main__":
    main()
