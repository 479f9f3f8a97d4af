"""STaR think targets for the dual-mode warm-up (Zelikman et al., arXiv 2203.14465; issue 27 item 2).

Contract:
- `python -m training.star --sets gsm multidigit onestep --n 128 --out FILE` writes one JSONL row per
  training item (`tasks.load_items` at the *train* split seed, disjoint from dev and test; the
  `tasks.numeric.HELD_OUT` families are refused) whose think target the policy wrote itself:
  * self: the policy's own greedy step-by-step completion on the served prompt with ``<think>\\n``
    forced (`evals.forced.greedy_batch`, batched transformers generation), up to `--think-tokens`;
    then the answer after `agent.nodes.answer_opening` (``\\n</think>\\n`` + the model's answer
    prefix), scored by the item's family (`tasks.family(item).score`, the reward);
  * rationalized (STaR §3.2): for an item the policy missed, the same with the reference answer given
    as a hint in the user message (`hint_messages`); kept only when it reaches the answer and the
    trace never mentions the hint (`mentions_hint`). The row's prompt is the served one, without
    the hint: the rationale is trained as if the model had found it.
  A trace cut at the budget, or one that writes a think tag itself, is not kept (`usable`).
- ``--reference``: the think target is the task's own reference rationale instead (``Item.trace``:
  GSM-Symbolic's ``answer_cot``, `tasks.numeric.arithmetic_trace` for the arithmetic sets), source
  ``reference``; no model is run. The distillation-style warm-up (Thinkless, arXiv 2505.13379, §3.1,
  distils its think mode from a stronger reasoner), for a policy whose own traces do not pay.
- Rows: ``{id, set, bucket, question, answer, trace, source: self | rationalized | reference, trace_tokens,
  item}``, plus one ``{"id", "kept": false, …}`` row for an item neither pass solved, so a re-run
  skips every item already tried (resumable).
- `star_rows(path)` reads the kept rows back as (`tasks.Item` with ``trace`` set, source).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

_HINT = re.compile(r"\bhint\b|correct answer is|answer is given|given answer|we are told the answer", re.I)


def hint_messages(messages: list[dict], answer: str) -> list[dict]:
    """`messages` with the reference answer added to the last user message (STaR's rationalization hint).

    >>> hint_messages([{"role": "user", "content": "Calculate 2 + 3."}], "5")[-1]["content"]
    'Calculate 2 + 3.\\n\\n(Hint: the correct answer is 5. Show the steps that reach it.)'
    """
    out = [dict(m) for m in messages]
    out[-1]["content"] = out[-1]["content"] + f"\n\n(Hint: the correct answer is {answer}. Show the steps that reach it.)"
    return out


def mentions_hint(trace: str) -> bool:
    """Whether a rationalized trace refers to the hint (such a trace is not kept).

    >>> mentions_hint("As the hint says, 5."), mentions_hint("2 + 3 = 5.")
    (True, False)
    """
    return bool(_HINT.search(trace))


def usable(row: dict) -> bool:
    """A solved trace is a target only when it ended on its own and holds no think tag of its own.

    >>> usable({"ended": True, "reasoning": "8 - 4 = 4."}), usable({"ended": True, "reasoning": "x <think> 4"})
    (True, False)
    """
    from policy.format import THINK_CLOSE, THINK_OPEN

    return row["ended"] and THINK_OPEN not in row["reasoning"] and THINK_CLOSE not in row["reasoning"]


class _Tok:
    """The `tokenize` that `agent.nodes.answer_opening` needs, over a HF tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)


def solve(model, tokenizer, prompts: list[list[int]], answer_prefix: str, think_tokens: int, answer_tokens: int,
          batch_size: int) -> list[dict]:
    """Greedy think-mode completions of `prompts` (served token ids), then the answer after the closing
    of thinking. Returns per prompt {reasoning, ended, closed, answer, text, trace_tokens}; ``text`` is
    the completion as the family scores it (``<think>\\n…\\n</think>\\n`` + prefix + answer)."""
    from agent.nodes import answer_opening
    from policy.format import THINK_CLOSE, THINK_OPEN

    tok = _Tok(tokenizer)
    open_ids = tok.tokenize(THINK_OPEN + "\n")
    from evals.forced import greedy_batch

    out: list[dict | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for b in range(0, len(order), batch_size):
        idx = order[b: b + batch_size]
        think = greedy_batch(model, tokenizer, [prompts[i] + open_ids for i in idx], think_tokens)
        tails, rows = [], []
        for i, (ids, ended) in zip(idx, think):
            reasoning = tokenizer.decode(ids, skip_special_tokens=True)
            closed = THINK_CLOSE in reasoning
            if closed:  # the model closed thinking itself: what follows is its answer already
                reasoning = reasoning.split(THINK_CLOSE, 1)[0]
            tails.append(prompts[i] + open_ids + tok.tokenize(reasoning.rstrip()) + answer_opening(tok, answer_prefix, False))
            rows.append({"reasoning": reasoning.strip(), "ended": ended or closed, "closed": closed,
                         "trace_tokens": len(ids)})
        answers = greedy_batch(model, tokenizer, tails, answer_tokens)
        for i, row, (ids, _) in zip(idx, rows, answers):
            answer = tokenizer.decode(ids, skip_special_tokens=True).split("\n\n", 1)[0]
            row["answer"] = answer
            row["text"] = f"{THINK_OPEN}\n{row['reasoning']}\n{THINK_CLOSE}\n{answer_prefix}{answer}"
            out[i] = row
    return out  # type: ignore[return-value]


def star_rows(path: str | Path):
    """The kept rows of a STaR file as (`tasks.Item` whose ``trace`` is the policy's own, source)."""
    from tasks import Item

    out = []
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        if row.get("kept", True):
            it = Item.from_dict(row["item"])
            it.trace = row["trace"]
            out.append((it, row["source"]))
    return out


def write_reference_rows(sets: list[str], n: int, out: Path, tokenizer) -> int:
    """Append a ``reference`` row (module contract) for each of the `n` training items per set not yet in
    `out`; returns how many were written. Raises ValueError for an item without a reference rationale."""
    from tasks import load_items
    from tasks.numeric import SPLIT_SEEDS

    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(ln)["id"] for ln in out.read_text().splitlines()} if out.exists() else set()
    written = 0
    with out.open("a") as fh:
        for name in sets:
            for it in load_items(name, n, SPLIT_SEEDS["train"]):
                if it.id in done:
                    continue
                if not it.trace:
                    raise ValueError(f"item {it.id} has no reference rationale")
                fh.write(json.dumps({"id": it.id, "set": name, "bucket": it.bucket, "question": it.question,
                                     "answer": it.answer, "kept": True, "trace": it.trace, "source": "reference",
                                     "trace_tokens": len(tokenizer.encode(it.trace, add_special_tokens=False)),
                                     "model_answer": None, "item": it.to_dict()}) + "\n")
                written += 1
    return written


def main(argv: list[str] | None = None) -> None:
    """The CLI (see the module contract); a one-line error and exit 2 on bad arguments."""
    ap = argparse.ArgumentParser(prog="python -m training.star", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="registered name or checkpoint dir (default: the served default)")
    ap.add_argument("--sets", nargs="+", default=["gsm", "multidigit", "onestep"])
    ap.add_argument("--n", type=int, default=128, help="training items per set")
    ap.add_argument("--think-tokens", type=int, default=320)
    ap.add_argument("--answer-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-rationalize", action="store_true", help="keep only the policy's own solutions")
    ap.add_argument("--reference", action="store_true",
                    help="write the tasks' reference rationales as the think targets (no model is run)")
    ap.add_argument("--out", required=True, help="JSONL file (appended; items already in it are skipped)")
    args = ap.parse_args(argv)
    from tasks.numeric import HELD_OUT, SPLIT_SEEDS

    held = [s for s in args.sets if s in HELD_OUT]
    if held:
        sys.exit(f"training.star: error: {held} are held out of training (tasks.numeric.HELD_OUT)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.config import AgentConfig
    from policy.models import resolve_policy
    from tasks import family, load_items

    if args.reference:
        write_reference_rows(args.sets, args.n, Path(args.out), AutoTokenizer.from_pretrained(resolve_policy(args.model)))
        return

    torch.manual_seed(0)
    path = resolve_policy(args.model)
    cfg = AgentConfig.for_model(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(ln)["id"] for ln in out.read_text().splitlines()} if out.exists() else set()

    def encode(messages):  # as tasks.render_prompt renders the served prompt
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)

    for name in args.sets:
        items = [it for it in load_items(name, args.n, SPLIT_SEEDS["train"]) if it.id not in done]
        t0 = time.perf_counter()
        print(f"{name}: {len(items)} items to solve", file=sys.stderr, flush=True)
        for b in range(0, len(items), args.batch_size * 2):  # written in chunks: an interruption loses little
            chunk = items[b: b + args.batch_size * 2]
            fams = [family(it) for it in chunk]
            plain = solve(model, tokenizer, [encode(f.messages(it)) for f, it in zip(fams, chunk)], cfg.answer_prefix,
                          args.think_tokens, args.answer_tokens, args.batch_size)
            rows: dict[str, dict] = {}
            missed = []
            for it, f, r in zip(chunk, fams, plain):
                if usable(r) and f.score(r["text"], it) == 1.0:
                    rows[it.id] = {"source": "self", **r}
                else:
                    missed.append((it, f))
            if missed and not args.no_rationalize:
                hinted = solve(model, tokenizer, [encode(hint_messages(f.messages(it), it.answer)) for it, f in missed],
                               cfg.answer_prefix, args.think_tokens, args.answer_tokens, args.batch_size)
                for (it, f), r in zip(missed, hinted):
                    if usable(r) and f.score(r["text"], it) == 1.0 and not mentions_hint(r["reasoning"]):
                        rows[it.id] = {"source": "rationalized", **r}
            with out.open("a") as fh:
                for it in chunk:
                    r = rows.get(it.id)
                    base = {"id": it.id, "set": name, "bucket": it.bucket, "question": it.question, "answer": it.answer}
                    if r is None:
                        fh.write(json.dumps({**base, "kept": False}) + "\n")
                    else:
                        fh.write(json.dumps({**base, "kept": True, "trace": r["reasoning"], "source": r["source"],
                                             "trace_tokens": r["trace_tokens"], "model_answer": r["answer"],
                                             "item": it.to_dict()}) + "\n")
            kept = sum(1 for ln in out.read_text().splitlines() if json.loads(ln).get("kept") and json.loads(ln)["set"] == name)
            print(f"  {name}: {b + len(chunk)}/{len(items)} tried, {kept} kept, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
