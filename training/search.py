"""Warm-up traces that search (issue 29 item 2): ``<search>`` calls answered by the real retriever,
the retrieved ``<information>`` masked from the loss (Search-R1, arXiv 2503.09516 §3.1).

Contract:
- `python -m training.search --types bridge comparison single --n 120 --out FILE` writes one JSONL
  row per training item (`tasks.hops`, train split: entities disjoint from dev and test) with the
  token ids of the served transcript, segment by segment, exactly as the agent builds it
  (`agent.nodes`): the prompt (the question's own retrieval, `tasks.prompt.item_passages`), then
  * no search needed (every gold page is among the passages shown) and nothing to work out: the
    bare answer (no ``<think>``: the model learns to answer at once when the passages suffice);
  * a comparison always thinks, searched or not: its trace states both release years and compares
    them (" 1987 is earlier than 1992, so quillmark was released first.") before the answer. Answered
    at once, the 0.5B picked the earlier of two years it had been shown at chance (0.43–0.47 on test,
    docs/results/hops-grpo), and its own free thinking did worse (0.23);
  * otherwise ``<think>\\n``, then for each gold page not yet shown, in hop order, one step
    ``{fact of the page before}. <search>{entity}</search>`` (a step ends at ``</search>``, where the
    agent's `think_step` stops), the agent's own ``\\n<information>…</information>\\n\\n`` block of
    the passages the retriever returns for that query (`agent.nodes.retrieve_more`: `step_k`
    passages not shown before, above the passage threshold, numbered after the earlier ones), and
    finally ``{facts}.{conclusion}\\n</think>\\n{answer}``.
  The query is the entity the question or the last page names (the work, then its creator), and the
  facts are read off the pages: a rationalization (STaR §3.2) grounded in what the retriever really
  returned. A trace is kept only when every search returns its gold page (so it reaches the answer);
  items whose search misses are written as ``{"id", "kept": false}``.
- Labels are -100 on the prompt and on every ``<information>`` block; the completion ends with the
  end-of-turn token. `search_rows(path)` reads the kept rows for ``training.sft --search_file``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _fact(item, page: str, world) -> str:
    """The sentence a gold page contributes (what the trace states after reading it)."""
    kind, _, _ = page.partition("-")
    if kind == "work":
        from tasks.hops import page_name

        w = next(x for x in world.works if page == page_name("work", x.name))
        ak = item.meta.get("answer_kind")
        if item.meta["type"] == "comparison" or ak == "year":
            return f"{w.name} was first released in {w.year}."
        return f"{w.name} was created by {w.creator}."
    from tasks.hops import page_name

    p = next(x for x in world.people.values() if page_name("person", x.name) == page)
    return f"{p.name} was born in {p.city}."


def _conclusion(item, world) -> str:
    """The step a comparison needs after its facts: both years compared, the earlier work named
    (" 1987 is earlier than 1992, so quillmark was released first."); "" for other types."""
    if item.meta["type"] != "comparison":
        return ""
    years = {w.name: w.year for w in world.works if w.name in item.meta["options"]}
    a, b = item.meta["options"]
    first, second = sorted((a, b), key=years.__getitem__)
    return f" {years[first]} is earlier than {years[second]}, so {first} was released first."


def _query(item, page: str, world) -> str:
    """The search query for a gold page: the work's name, or the person's name."""
    from tasks.hops import page_name

    if page.startswith("work-"):
        return next(x.name for x in world.works if page == page_name("work", x.name))
    return next(x.name for x in world.people.values() if page == page_name("person", x.name))


def build_row(item, tokenizer, retriever, cfg) -> dict | None:
    """The training row of `item` (see the module contract), or None when a search misses its page."""
    from policy.format import THINK_CLOSE, THINK_OPEN
    from tasks import render_prompt
    from tasks.hops import world
    from tasks.prompt import information_turn, item_passages, step_passages

    specials = [t for t in (tokenizer.all_special_tokens or []) if t]
    shown = item_passages(item, retriever, cfg, specials) or []
    enc = lambda s: list(tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
    ids = enc(render_prompt(tokenizer, item, shown))
    n_prompt = len(ids)
    labels = [-100] * n_prompt
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>")] if "<|im_end|>" in tokenizer.get_vocab() else \
        [tokenizer.eos_token_id]

    def add(text: str, loss: bool) -> None:
        t = enc(text)
        ids.extend(t)
        labels.extend(t if loss else [-100] * len(t))

    w = world()
    have = {p["source"].rsplit("/", 1)[-1] for p in shown}
    gold = item.meta["sources"]
    searches = 0
    if all(g in have for g in gold) and not _conclusion(item, w):
        add(item.answer, True)
    else:
        add(THINK_OPEN + "\n", True)
        facts: list[str] = []
        passages = list(shown)
        for g in gold:
            if g in have:
                facts.append(_fact(item, g, w))
                continue
            lead = " ".join(facts)
            add((lead + " " if lead else "") + f"<search>{_query(item, g, w)}</search>", True)
            facts = []
            seen = {p["id"] for p in passages}
            new = step_passages(retriever, _query(item, g, w), cfg, seen, len(passages) + 1, specials)
            searches += 1
            if g not in {p["source"].rsplit("/", 1)[-1] for p in new}:
                return None
            add(information_turn(new), False)
            passages += new
            have |= {p["source"].rsplit("/", 1)[-1] for p in new}
            facts.append(_fact(item, g, w))
        add(" ".join(facts) + _conclusion(item, w) + "\n" + THINK_CLOSE + "\n" + item.answer, True)
    ids.extend(eos)
    labels.extend(eos)
    return {"id": item.id, "type": item.meta["type"], "kept": True, "searches": searches,
            "input_ids": ids, "labels": labels, "text": tokenizer.decode(ids[n_prompt:])}


def search_rows(path: str | Path) -> list[dict]:
    """The kept rows of a search-trace file: dicts with input_ids and labels (TRL's processed format)."""
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows if r.get("kept")]


def main(argv: list[str] | None = None) -> None:
    """The CLI (see the module contract); a one-line error and exit 2 on bad arguments."""
    ap = argparse.ArgumentParser(prog="python -m training.search", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="registered name or checkpoint dir (its tokenizer and agent config)")
    ap.add_argument("--types", nargs="+", default=["bridge", "comparison", "single"])
    ap.add_argument("--n", type=int, nargs="+", default=[120], help="training items per type (one, or one per type)")
    ap.add_argument("--min-passage-score", type=float, default=0.3, help="the agent's passage threshold on this index")
    ap.add_argument("--out", required=True, help="JSONL file (rewritten)")
    args = ap.parse_args(argv)
    ns = args.n * len(args.types) if len(args.n) == 1 else args.n
    if len(ns) != len(args.types):
        sys.exit("training.search: error: --n takes one count, or one per type")
    from transformers import AutoTokenizer

    from agent.config import AgentConfig
    from evals.hops import cache_dir
    from policy.models import resolve_policy
    from tasks import load_items
    from tasks.hops import SPLIT_SEEDS, build_index

    path = resolve_policy(args.model)
    cfg = AgentConfig.for_model(path, min_passage_score=args.min_passage_score)
    tokenizer = AutoTokenizer.from_pretrained(path)
    retriever = build_index(cache_dir() / "corpus", cache_dir() / "index")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, list[int]] = {}
    with out.open("w") as f:
        for t, n in zip(args.types, ns):
            for it in load_items(f"hops-{t}", n, SPLIT_SEEDS["train"]):
                row = build_row(it, tokenizer, retriever, cfg)
                c = counts.setdefault(t, [0, 0, 0])
                if row is None:
                    f.write(json.dumps({"id": it.id, "type": t, "kept": False}) + "\n")
                    continue
                c[0] += 1
                c[1] += row["searches"] > 0
                c[2] += row["searches"]
                f.write(json.dumps(row) + "\n")
    for t, (kept, searched, searches) in counts.items():
        print(f"{t}: kept {kept}, with search {searched}, searches {searches}")


if __name__ == "__main__":
    main()
