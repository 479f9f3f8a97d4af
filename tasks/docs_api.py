"""API lookup: documentation questions mined from the Python docs, large enough to split (issue 27 item 1).

The hand-written documentation QA set (`tasks.docs`, 20 questions) is too small to split or to show a
2-point difference. This set is built mechanically from the Python documentation's own reST sources
(written by the CPython maintainers, not by us): every module-level ``.. function::`` entry whose
description opens with "Return …" becomes the question a user asks when they know what they want
and not what it is called, e.g. ``os.getcwd`` →
"Which function of Python's os module returns a string representing the current working directory?".
The answer is the function's name (accepted when it appears word-bounded in the answer part:
`tasks.docs.Docs.score`, so ``os.getcwd()`` counts). Served with retrieval, as documentation
questions are: the passages the agent retrieves carry the entry. An "easy" family: the passage holds
the answer, nothing needs working out.

Contract:
- `mine(corpus)`: one row per usable entry, sorted by id: {id: "<module>.<name>", question,
  answers_any: [name], sources: [path relative to the corpus]}. An entry is dropped when its first
  sentence names the function (the answer would be in the question), has fewer than 4 or more than
  30 words, or is shared with another entry (two right answers); CPython's ``test`` package (its own
  test helpers, not a public API) is left out.
- `split_rows(rows)`: a fixed shuffle (``random.Random(0)``), then test = the first 200, dev = the
  next 150, train = the rest: disjoint by construction. `SPLIT_SEEDS` maps the project's split seeds
  (1 train, 2 dev, 3 test) onto them.
- `make_items(n, seed)`: the first `n` items of the split of `seed`, family ``docs``, retrieval on.
  Raises ValueError for a seed without a split (e.g. 4) or a missing data file.
- ``python -m tasks.docs_api build --corpus DIR`` writes `DOCS_API` (``tasks/data/docs_api.jsonl``);
  the committed file was mined from Debian's python3.11-doc (``/usr/share/doc/python3.11/html/_sources``,
  the corpus of the demo index). A bad corpus exits 2 with one line.
- Never trained on by the retrieval evaluation (``written``/``task`` sets stay separate); the train
  split exists for training the decision on documentation questions.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

from tasks.base import Item
from tasks.docs import qa_item, read_rows

DOCS_API = Path(__file__).parent / "data" / "docs_api.jsonl"
SPLIT_SEEDS = {1: "train", 2: "dev", 3: "test"}
SPLIT_SIZES = {"test": 200, "dev": 150}
_FUNCTION = re.compile(r"^\.\. function:: ([A-Za-z_][\w.]*)\s*\(")
_MODULE = re.compile(r"^\.\. (?:module|currentmodule):: ([\w.]+)\s*$")
_ROLE = re.compile(r":[\w:]+:`(~|!)?([^`<]*?)(?:\s*<[^>]*>)?`")
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)(?<!etc)\.(?=\s|$)")


def plain(text: str) -> str:
    """reST inline markup removed: roles keep their text (the last dotted part for ``~`` targets),
    literals and emphasis lose their marks, whitespace is collapsed.

    >>> plain("Return a :class:`str` of ``n`` *items* from :func:`~os.path.join`.")
    'Return a str of n items from join.'
    """
    def role(m: re.Match) -> str:
        target = m.group(2).strip()
        return target.rsplit(".", 1)[-1] if m.group(1) == "~" else target

    text = _ROLE.sub(role, text)
    text = text.replace("``", "").replace("**", "")
    text = re.sub(r"(?<!\w)\*([^*\s][^*]*)\*", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def first_sentence(paragraph: str) -> str:
    """The paragraph's first sentence, up to and without its full stop.

    >>> first_sentence("Return the cwd. It may be relative.")
    'Return the cwd'
    >>> first_sentence("Return a stream, e.g. a file. path may be a name")
    'Return a stream, e.g. a file'
    """
    m = _SENTENCE_END.search(paragraph)
    return (paragraph[:m.start()] if m else paragraph).strip().rstrip(":;,").strip()


def _entries(lines: list[str]):
    """(module or None, function name, first paragraph) of each module-level ``.. function::`` entry."""
    module = None
    for i, line in enumerate(lines):
        m = _MODULE.match(line)
        if m:
            module = m.group(1)
            continue
        f = _FUNCTION.match(line)
        if not f:
            continue
        j = i + 1
        while j < len(lines) and (lines[j].startswith("              ") or lines[j].strip().startswith(".. function::")
                                  or lines[j].startswith("   :") or not lines[j].strip()):
            j += 1  # continuation signatures, field options and blank lines before the description
        para = []
        while j < len(lines) and lines[j].startswith("   ") and lines[j].strip() and not lines[j].strip().startswith(".."):
            para.append(lines[j].strip())
            j += 1
        if para:
            yield module, f.group(1), " ".join(para)


def question_for(module: str | None, sentence: str) -> str:
    """The question asked of a description opening with "Return": the verb becomes "returns".

    >>> question_for("os", "Return a string representing the current working directory")
    "Which function of Python's os module returns a string representing the current working directory?"
    >>> question_for(None, "Return the absolute value of a number")
    'Which built-in Python function returns the absolute value of a number?'
    """
    rest = re.sub(r"^Returns? ", "", sentence)
    where = "built-in Python function" if module in (None, "builtins") else f"function of Python's {module} module"
    return f"Which {where} returns {rest}?"


def mine(corpus: Path) -> list[dict]:
    """Rows of every usable module-level function entry under `corpus` (``*.rst.txt`` or ``*.rst``).

    Raises:
        ValueError: `corpus` is not a folder or holds no reST sources.
    """
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise ValueError(f"corpus {corpus} is not a folder")
    files = sorted(p for p in corpus.rglob("*") if p.name.endswith((".rst.txt", ".rst")))
    if not files:
        raise ValueError(f"corpus {corpus} holds no .rst.txt / .rst files")
    rows = []
    for path in files:
        for module, name, para in _entries(path.read_text(encoding="utf-8", errors="replace").splitlines()):
            leaf = name.rsplit(".", 1)[-1]
            if "." in name:  # a dotted entry names its own module
                module = name.rsplit(".", 1)[0]
            if (module or "").split(".")[0] == "test":  # CPython's own test helpers: not a public API
                continue
            sentence = first_sentence(plain(para))
            words = sentence.split()
            if not re.match(r"Returns? ", sentence) or not 4 <= len(words) <= 30:
                continue
            if re.search(r"(?<!\w)" + re.escape(leaf) + r"(?!\w)", sentence, re.IGNORECASE):
                continue
            rows.append({"id": f"{module or 'builtins'}.{leaf}", "question": question_for(module, sentence),
                         "answers_any": [leaf], "sources": [str(path.relative_to(corpus))]})
    counts = Counter(r["question"] for r in rows)
    ids = Counter(r["id"] for r in rows)
    return sorted((r for r in rows if counts[r["question"]] == 1 and ids[r["id"]] == 1), key=lambda r: r["id"])


def split_rows(rows: list[dict]) -> dict[str, list[dict]]:
    """{test, dev, train} of `rows`: one fixed shuffle, then the first 200, the next 150, the rest."""
    rows = sorted(rows, key=lambda r: r["id"])
    random.Random(0).shuffle(rows)
    t, d = SPLIT_SIZES["test"], SPLIT_SIZES["dev"]
    return {"test": rows[:t], "dev": rows[t:t + d], "train": rows[t + d:]}


def make_items(n: int, seed: int, path: Path = DOCS_API) -> list[Item]:
    """The first `n` items of the split that `seed` names (1 train, 2 dev, 3 test), family ``docs``.

    Raises:
        ValueError: a seed without a split, or no data file at `path`.
    """
    if seed not in SPLIT_SEEDS:
        raise ValueError(f"docs-api has splits for seeds {sorted(SPLIT_SEEDS)} (train, dev, test), not {seed}")
    if not Path(path).is_file():
        raise ValueError(f"no docs-api data at {path}: build it with python -m tasks.docs_api build --corpus DIR")
    part = split_rows(read_rows(path))[SPLIT_SEEDS[seed]][:n]
    return [qa_item(r, "docs-api", set="docs-api") for r in part]


def main(argv: list[str] | None = None) -> None:
    """CLI: ``build --corpus DIR [--out FILE]``; a bad corpus exits 2 with one line."""
    ap = argparse.ArgumentParser(prog="python -m tasks.docs_api", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="mine the questions from the docs' reST sources")
    b.add_argument("--corpus", default="/usr/share/doc/python3.11/html/_sources", help="reST sources folder")
    b.add_argument("--out", default=str(DOCS_API))
    ns = ap.parse_args(argv)
    try:
        rows = mine(Path(ns.corpus))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    Path(ns.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    sizes = {k: len(v) for k, v in split_rows(rows).items()}
    print(f"wrote {len(rows)} questions to {ns.out} (splits {sizes})")


if __name__ == "__main__":
    main()
