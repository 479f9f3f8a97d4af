"""Documentation QA: questions whose answers are in the Python docs (`tasks/data/docs_qa.jsonl`).

Contract:
- Served with retrieval: the prompt carries the passages the agent retrieves (`tasks.prompt`).
- Correct when the answer part contains one of the accepted phrases (word-bounded, any case);
  no programmatic trace (no think target).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from tasks.base import Item, TaskFamily

DOCS_QA = Path(__file__).parent / "data" / "docs_qa.jsonl"


def has_phrase(phrase: str, text: str) -> bool:
    """Whether `phrase` occurs in `text` as whole words, any case.

    >>> has_phrase("None", "it returns none."), has_phrase("len", "length")
    (True, False)
    """
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text, re.IGNORECASE) is not None


def load(n: int | None = None, path: Path = DOCS_QA) -> list[Item]:
    """The first `n` documentation questions as items (retrieval on)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:n]
    return [Item(f"docs-{r['id']}", "docs", r["question"], r["answers_any"][0], retrieval=True,
                 meta={"answers_any": r["answers_any"], "sources": r["sources"]}) for r in rows]


class Docs(TaskFamily):
    """Documentation QA: accepted phrases, no trace."""

    name = "docs"

    def score(self, text: str, item: Item) -> float:
        """1.0 when the answer part holds an accepted phrase, else 0.0."""
        ans = self.answer_part(text)
        return 1.0 if any(has_phrase(a, ans) for a in item.meta["answers_any"]) else 0.0


FAMILY = Docs()
