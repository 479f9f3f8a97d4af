"""Tasks: every prompt, target format, answer extractor and scorer, in one place.

Contract (DESIGN.md, "tasks/"): training (`training.sft`, `training.grpo`), evaluation
(`evals.modes`) and the served agent (`agent.nodes`) import what they need from here and
define none of it themselves, so what is trained is what is served.

- `tasks.prompt`: the served chat prompt (system prompt, passages above a relevance score,
  history) — the prompt every question-answering task is trained and evaluated on.
- `tasks.base`: the `Item` record and the `TaskFamily` interface (messages, think and
  no-think targets, answer extraction, scorer).
- `tasks.arithmetic`: chain sums from reasoning-gym in an easy and a hard bucket, with
  programmatic running-total traces; varied user phrasings.
- `tasks.numeric`: GSM-Symbolic word problems, multi-digit and one-step arithmetic (reasoning-gym).
- `tasks.hops`: two-hop (bridge, comparison) and single-hop questions over a generated encyclopedia
  ingested into a task index (issue 29).
- `tasks.docs`: the documentation QA set (`tasks/data/docs_qa.jsonl`).
- `tasks.docs_api`: API-lookup questions mined from the Python docs (`tasks/data/docs_api.jsonl`),
  split into train / dev / test.
- `tasks.ntr`: next-token reasoning (RPT): its own prompt, prefix-match scorer, positions
  from the documentation corpus and from arithmetic statements.

`load_items(name, n, seed)` builds an evaluation or training set by name; `family(item)`
returns the `TaskFamily` that owns an item.
"""
from __future__ import annotations

from tasks.base import Item, TaskFamily

TASK_SETS = ("arith-easy", "arith-hard", "arith", "docs", "docs-api", "ntr", "gsm", "multidigit", "onestep", "letters", "times",
             "written", "task", "hops-bridge", "hops-comparison", "hops-single")


def family(item: Item) -> TaskFamily:
    """The `TaskFamily` that owns `item` (by ``item.family``).

    Raises:
        KeyError: an unknown family name.
    """
    from tasks import arithmetic, docs, hops, ntr, numeric

    families = {"arith": arithmetic.FAMILY, "docs": docs.FAMILY, "ntr": ntr.FAMILY, "numeric": numeric.FAMILY,
                "cited": docs.CITED, "hops": hops.FAMILY}
    return families[item.family]


def render_prompt(tokenizer, item: Item, passages: list[dict] | None = None) -> str:
    """The served prompt of `item` as text: the policy's chat template over
    ``family(item).messages(item, passages)`` with the generation prompt added (what the agent
    tokenizes; `policy.base.HFTokenizerMixin.chat_prompt` renders the same way)."""
    return tokenizer.apply_chat_template(family(item).messages(item, passages), tokenize=False,
                                         add_generation_prompt=True)


def prompt_ids(tokenizer, item: Item, passages: list[dict] | None = None) -> list[int]:
    """The served prompt of `item` as token ids (`render_prompt`, encoded without added special tokens:
    the template already holds them), [prompt tokens]."""
    return list(tokenizer.encode(render_prompt(tokenizer, item, passages), add_special_tokens=False))


def load_items(name: str, n: int, seed: int = 0, ntr_file: str | None = None) -> list[Item]:
    """Items of task set `name`: arith-easy, arith-hard, arith (both buckets, n each), docs, ntr, gsm,
    multidigit, onestep (`tasks.numeric`), docs-api (`tasks.docs_api`: seeds 1, 2, 3 only), hops-bridge, hops-comparison, hops-single (`tasks.hops`),
    written, task (`tasks.docs.load_cited`; no seed: fixed sets).

    Args:
        n: items (per bucket for ``arith``).
        seed: generator seed; training and evaluation use disjoint seeds
            (`tasks.arithmetic.SPLIT_SEEDS`).
        ntr_file: a JSONL of NTR rows (for ``ntr``).

    Raises:
        ValueError: an unknown name, or ``ntr`` without `ntr_file`.
    """
    from tasks import arithmetic, docs, docs_api, hops, ntr, numeric

    if name == "docs-api":
        return docs_api.make_items(n, seed)
    if name in hops.SETS:
        return hops.make_items(name, n, seed)
    if name in numeric.SETS:
        return numeric.make_items(name, n, seed)
    if name in docs.QUESTION_SETS:
        return docs.load_cited(name, n)
    if name in ("arith-easy", "arith-hard"):
        return arithmetic.make_items(name.split("-")[1], n, seed)
    if name == "arith":
        return arithmetic.make_items("easy", n, seed) + arithmetic.make_items("hard", n, seed)
    if name == "docs":
        return docs.load(n)
    if name == "ntr":
        if not ntr_file:
            raise ValueError("task set ntr needs an NTR file (ntr_dataset.jsonl of a training run)")
        return ntr.load(ntr_file, n)
    raise ValueError(f"unknown task set {name!r}; known: {list(TASK_SETS)}")
