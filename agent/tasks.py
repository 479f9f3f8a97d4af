"""Evaluation task sets, each with its own scorer: ``Task.score(answer_text, turn_metadata) → float in [0, 1]``.

- ``rg-easy`` / ``rg-hard`` and any ``rg:NAME`` (reasoning-gym generators, scored by the
  generator's own verifier on the extracted answer: the last ``\\boxed{}``, else the last number).
- ``docs``: `agent/data/docs_qa.jsonl`, questions whose answers are in the Python docs;
  correct when the answer contains one of the expected phrases (word-bounded, any case);
  `support` records whether the passages the answer cites (all shown passages when it cites
  none) contain it too.
- ``ntr``: held-out next-token positions (the JSONL written by `python -m training.grpo`),
  scored by the prefix-match reward (RPT Eq. 3); run without retrieval.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from policy.format import extract_boxed, prefix_match_score

DOCS_QA = Path(__file__).parent / "data" / "docs_qa.jsonl"
RG_PRESETS = {
    "rg-easy": ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    "rg-hard": ("basic_arithmetic", {"min_terms": 4, "max_terms": 4, "min_digits": 2, "max_digits": 2}),
    "rg-chain": ("chain_sum", {}),
    "rg-gsm": ("gsm_symbolic", {}),
}
BOX_HINT = " Give the final answer in \\boxed{}."


@dataclass
class Task:
    """One question: `question` (what the user asks), `score` (answer text, metadata → [0, 1]),
    `retrieval` (whether the agent retrieves), `meta` (kept in results)."""

    id: str
    question: str
    score: Callable[[str, dict], float]
    retrieval: bool = True
    meta: dict = field(default_factory=dict)


_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(text: str) -> str:
    """The answer to check: the last ``\\boxed{}``, else the last number, else the stripped text.

    >>> extract_answer("so 3 + 4 = 7.")
    '7'
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed.strip()
    nums = _NUM.findall(text.replace(",", ""))
    return nums[-1] if nums else text.strip()


def rg_tasks(name: str, n: int, seed: int = 0) -> list[Task]:
    """`n` reasoning-gym questions of preset `name` (rg-easy, rg-hard, …) or ``rg:GENERATOR``.

    Raises:
        ValueError: unknown preset, or reasoning-gym not installed.
    """
    try:
        import reasoning_gym
    except ImportError:
        raise ValueError("reasoning-gym task sets need `pip install reasoning-gym` (the eval extra)") from None
    if name.startswith("rg:"):
        gen, cfg = name[3:], {}
    elif name in RG_PRESETS:
        gen, cfg = RG_PRESETS[name]
    else:
        raise ValueError(f"unknown task set {name!r}; known: {sorted(RG_PRESETS)} or rg:NAME")
    ds = reasoning_gym.create_dataset(gen, size=n, seed=seed, **cfg)
    tasks = []
    for i, entry in enumerate(ds):
        def score(answer: str, meta: dict, entry=entry, ds=ds) -> float:
            return float(ds.score_answer(extract_answer(answer), entry) or 0.0)
        tasks.append(Task(f"{name}-{i}", entry["question"] + BOX_HINT, score, retrieval=False,
                          meta={"answer": str(entry["answer"])}))
    return tasks


def _has(phrase: str, text: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text, re.IGNORECASE) is not None


def docs_tasks(n: int | None = None, path: Path = DOCS_QA) -> list[Task]:
    """The documentation QA set (first `n` rows)."""
    tasks = []
    for row in [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:n]:
        def score(answer: str, meta: dict, row=row) -> float:
            return 1.0 if any(_has(a, answer) for a in row["answers_any"]) else 0.0
        tasks.append(Task(f"docs-{row['id']}", row["question"], score, retrieval=True,
                          meta={"answers_any": row["answers_any"], "sources": row["sources"]}))
    return tasks


def docs_support(task: Task, answer: str, metadata: dict, passage_text: Callable[[int], str]) -> bool:
    """Whether the passages the answer cites (all shown ones when it cites none) hold an expected phrase."""
    srcs = metadata.get("sources", [])
    cited = [s for s in srcs if s.get("cited")] or srcs
    return any(_has(a, passage_text(s["id"])) for s in cited for a in task.meta["answers_any"])


def ntr_tasks(path: str | Path, n: int | None = None) -> list[Task]:
    """Next-token tasks from a JSONL of NTR rows (prompt, continuation, boundaries, entropy, hard)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()][:n]
    tasks = []
    for i, r in enumerate(rows):
        def score(answer: str, meta: dict, r=r) -> float:
            return prefix_match_score(extract_boxed(answer), r["continuation"], r["boundaries"])
        question = ("Predict the next token of this text. Reply with the predicted text in \\boxed{} "
                    f"and nothing else.\n\nText: {r['context']}")
        tasks.append(Task(f"ntr-{i}", question, score, retrieval=False,
                          meta={"hard": r.get("hard"), "entropy": r.get("entropy")}))
    return tasks


def load_tasks(name: str, n: int, seed: int = 0, ntr_file: str | None = None) -> list[Task]:
    """Task set by name: rg-easy, rg-hard, rg-chain, rg-gsm, rg:NAME, docs, ntr.

    Raises:
        ValueError: unknown name, or ntr without `ntr_file`.
    """
    if name == "docs":
        return docs_tasks(n)
    if name == "ntr":
        if not ntr_file:
            raise ValueError("task set ntr needs --ntr-file (ntr_dataset.jsonl from a training run)")
        return ntr_tasks(ntr_file, n)
    return rg_tasks(name, n, seed)
