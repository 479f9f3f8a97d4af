"""Documentation QA: questions whose answers are in the Python docs (`tasks/data/docs_qa.jsonl`).

Contract:
- Served with retrieval: the prompt carries the passages the agent retrieves (`tasks.prompt`).
- Correct when the answer part contains one of the accepted phrases (word-bounded, any case);
  no programmatic trace (no think target).
- `load_cited(set, n)`: the retrieval evaluation's written (``retrieval/data/questions.jsonl``) and
  task (``questions_task.jsonl``) questions with their gold pages, as items of family ``cited``:
  correct when the answer cites ``[n]`` for a shown passage from a gold page (`Cited.score`; the
  shown passages' sources are put in ``item.meta["shown"]`` by whoever builds the prompt). These sets
  evaluate; they are never trained on.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from tasks.base import Item, TaskFamily

DOCS_QA = Path(__file__).parent / "data" / "docs_qa.jsonl"
QUESTION_SETS = {"written": Path(__file__).parents[1] / "retrieval" / "data" / "questions.jsonl",
                 "task": Path(__file__).parents[1] / "retrieval" / "data" / "questions_task.jsonl"}
_CITE = re.compile(r"\[(\d+)\]")


def has_phrase(phrase: str, text: str) -> bool:
    """Whether `phrase` occurs in `text` as whole words, any case.

    >>> has_phrase("None", "it returns none."), has_phrase("len", "length")
    (True, False)
    """
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text, re.IGNORECASE) is not None


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSONL question file, blank lines skipped."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def qa_item(row: dict, prefix: str = "docs", **meta) -> Item:
    """A row {id, question, answers_any, sources} as an item of family ``docs`` (retrieval on, id
    ``<prefix>-<row id>``, the accepted phrases and sources in its meta, plus `meta`)."""
    return Item(f"{prefix}-{row['id']}", "docs", row["question"], row["answers_any"][0], retrieval=True,
                meta={"answers_any": row["answers_any"], "sources": row["sources"], **meta})


def load(n: int | None = None, path: Path = DOCS_QA) -> list[Item]:
    """The first `n` documentation questions as items (retrieval on)."""
    return [qa_item(r) for r in read_rows(path)[:n]]


class Docs(TaskFamily):
    """Documentation QA: accepted phrases, no trace."""

    name = "docs"

    def score(self, text: str, item: Item) -> float:
        """1.0 when the answer part holds an accepted phrase, else 0.0."""
        ans = self.answer_part(text)
        return 1.0 if any(has_phrase(a, ans) for a in item.meta["answers_any"]) else 0.0


FAMILY = Docs()


def load_cited(name: str, n: int | None = None) -> list[Item]:
    """The first `n` questions of retrieval question set `name` (written, task) as ``cited`` items.

    Raises:
        ValueError: an unknown set name.
    """
    if name not in QUESTION_SETS:
        raise ValueError(f"unknown question set {name!r}; known: {list(QUESTION_SETS)}")
    rows = read_rows(QUESTION_SETS[name])[:n]
    return [Item(f"{name}-{r['id']}", "cited", r["question"], r["sources"][0], retrieval=True,
                 meta={"sources": r["sources"], "set": name}) for r in rows]


class Cited(TaskFamily):
    """A documentation question scored by citation: does the answer cite a passage from a gold page?"""

    name = "cited"

    def score(self, text: str, item: Item) -> float:
        """1.0 when the answer part cites ``[n]`` and shown passage n (``item.meta["shown"]``, its
        source paths in citation order) is a gold page; else 0.0.

        >>> it = Item("x", "cited", "q", "library/copy.rst.txt", meta={"sources": ["library/copy.rst.txt"],
        ...           "shown": ["/usr/doc/library/os.rst.txt", "/usr/doc/library/copy.rst.txt"]})
        >>> Cited().score("Use deepcopy [2].", it), Cited().score("Use deepcopy [1].", it)
        (1.0, 0.0)
        """
        shown = item.meta.get("shown") or []
        gold = item.meta["sources"]
        for m in _CITE.findall(self.answer_part(text)):
            k = int(m)
            if 1 <= k <= len(shown) and any(shown[k - 1] == g or shown[k - 1].endswith("/" + g) for g in gold):
                return 1.0
        return 0.0


CITED = Cited()
