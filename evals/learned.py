"""``python -m evals.learned``: a trained decision (`training.decision`) measured on the served backend.

Contract:
- ``run``: for every held-out item of each set (`tasks.load_items`, a split seed), the served policy
  (`policy.models.load_policy`, onnx int8 on a CPU) takes one greedy first token on the served prompt:
  the think token (`policy.modes.think_sequences`) → it answers step by step
  (`evals.quality.answer_thinking`), else at once (`evals.quality.answer_direct`) — exactly the
  branch the agent serves with ``decision: learned``. Rows {id, set, bucket, thought, first_token,
  first_entropy, text, tokens, score} are appended (sets served with retrieval, e.g. docs, need
  ``--index``: their passages are retrieved as `evals.quality` and the agent do) to ``<out>/<model>/<split>-<set>.jsonl``;
  a re-run skips the ids already there. ``--agent-check K`` then runs the served agent on K of them
  and writes how often its decision and score agree (``<split>-<set>.agent-check.json``).
- ``report``: per set, the think-rate (95 % Wilson), accuracy and mean generated tokens of the
  learned decision beside the base model's forced modes on the same items (``--base DIR``: rows of
  ``python -m evals.quality run``; never = at once, always = step by step, oracle), paired
  differences (95 % interval, exact McNemar p; `evals.stats.paired`), and on the mix of ``--mix``
  sets (equal counts) the learned mode's tokens as a share of the base's always-think tokens.
  ``--start DIR`` (rows of this command's ``run`` for the checkpoint training started from) adds the
  start's think-rate, accuracy and tokens and the paired difference against it (what training changed).
  ``drift`` compares the learned branch with the base's same branch on the same items (what the
  adapter changed in the answers themselves). Writes ``report.md`` and ``report.json``.
- ``auroc``: the decision as a ranking signal (issue 26's "compose the gate with the model's own
  first-token choice"): p(think token | served prompt) of the checkpoint (transformers, fp32;
  `training.decision.p_think`) on the base's rows of ``--base``, its AUROC (`evals.stats.auroc`)
  against "thinking helped" (forced step by step right, at once wrong), against a wrong direct answer,
  and beside it the base's gate score (the forced-``Answer:`` draft's mean entropy) on the same items.
  Writes ``auroc.json`` with the per-item p(think).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path

from evals.cli import log as _log
from evals.quality import SPLITS, answer_direct, answer_thinking, rows_path


async def answer_learned(policy, prompt: list[int], cfg, think_id: int, direct_tokens: int, think_tokens: int,
                         answer_tokens: int) -> dict:
    """The learned branch of one prompt: {thought, first_token, first_entropy (nats), text, tokens}."""
    from policy.base import GenerationParams

    first = await policy.generate(prompt, GenerationParams(max_tokens=1))
    thought = first.token_ids[:1] == [think_id]
    if thought:
        text, n = await answer_thinking(policy, prompt, cfg, think_tokens, answer_tokens)
    else:
        d = await answer_direct(policy, prompt, cfg, direct_tokens)
        text, n = d.text, len(d.token_ids)
    return {"thought": thought, "first_token": first.token_ids[0] if first.token_ids else None,
            "first_entropy": round(first.entropies[0], 4) if first.entropies else None, "text": text, "tokens": n}


def run(args) -> None:
    """The ``run`` command (module contract)."""
    from agent.config import AgentConfig
    from policy.format import THINK_OPEN
    from policy.models import load_policy, resolve_policy
    from tasks import family, load_items, render_prompt
    from tasks.prompt import item_passages

    path = resolve_policy(args.model)
    cfg = AgentConfig.for_model(path)
    policy = load_policy(args.model, backend=args.backend)
    think_id = policy.tokenize(THINK_OPEN)[0]
    retriever = None
    if args.index:
        from retrieval.retriever import Retriever

        retriever = Retriever(Path(args.index))
    for name in args.sets:
        items = load_items(name, args.n, SPLITS[args.split])
        retrieves = any(it.retrieval for it in items)  # served with retrieval: rows and agent check get the index
        if retriever is None and retrieves:
            raise ValueError(f"set {name} is served with retrieval: give --index (the agent's index)")
        dest = rows_path(Path(args.out), args.model, args.split, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        done = {json.loads(ln)["id"] for ln in dest.read_text().splitlines()} if dest.exists() else set()
        todo = [it for it in items if it.id not in done]
        _log(f"{args.model} {args.split}/{name}: {len(todo)} of {len(items)} items to answer")
        t0 = time.perf_counter()
        for k, it in enumerate(todo, 1):
            passages = item_passages(it, retriever, cfg, policy.special_tokens)
            prompt = policy.tokenize(render_prompt(policy.tokenizer, it, passages))
            r = asyncio.run(answer_learned(policy, prompt, cfg, think_id, args.direct_tokens, args.think_tokens,
                                           args.answer_tokens))
            row = {"id": it.id, "set": name, "bucket": it.bucket, **r, "score": family(it).score(r["text"], it)}
            with dest.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            if k % 25 == 0 or k == len(todo):
                _log(f"  {k}/{len(todo)}  {(time.perf_counter() - t0) / k:.1f} s/item")
        if args.agent_check:
            check = asyncio.run(agent_check(policy, cfg, items, _read(dest), args.agent_check,
                                            retriever if retrieves else None))
            (dest.parent / f"{args.split}-{name}.agent-check.json").write_text(json.dumps(check))
            _log(f"  agent check: {check}")


async def agent_check(policy, cfg, items, rows: dict[str, dict], k: int, retriever=None) -> dict:
    """The served agent (`agent.runner.Agent`, effort auto, the config's own budgets; `retriever` for sets
    served with retrieval, None otherwise) on `k` evenly spaced items: how often its decision (thought or
    not) and its score match the learned rows'."""
    from agent.runner import Agent
    from tasks import family

    picked = [it for it in items[:: max(1, len(items) // k)] if it.id in rows][:k]
    same_decision = same_score = 0
    for it in picked:
        turn = await Agent(policy, retriever, cfg).run([{"role": "user", "content": it.question}], effort="auto")
        same_decision += turn.thought == rows[it.id]["thought"]
        same_score += family(it).score(turn.answer, it) == rows[it.id]["score"]
    n = len(picked)
    return {"n": n, "decision_agreement": same_decision / n if n else None,
            "score_agreement": same_score / n if n else None}


def _read(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in (json.loads(ln) for ln in path.read_text().splitlines() if ln.strip())} if path.is_file() else {}


def _id_order(item_id: str) -> tuple[str, int]:
    """Sort key of an item id: its text, then its trailing number as a number ("gsm-s3-9" before
    "gsm-s3-10"; "written-q000"; ids without a number, "docs-len", by their text).

    >>> sorted(["gsm-s3-10", "gsm-s3-9", "docs-len", "written-q001"], key=_id_order)
    ['docs-len', 'gsm-s3-9', 'gsm-s3-10', 'written-q001']
    """
    m = re.search(r"(\d+)$", item_id)
    return (item_id[:m.start()], int(m.group(1))) if m else (item_id, -1)


def _scored(rows: dict[str, dict], ids: list[str]) -> list[dict]:
    """Learned rows of `ids` in the shape `evals.stats.summarize` and `paired` read (tokens split by branch)."""
    return [{"id": i, "score": rows[i]["score"], "thought": rows[i]["thought"],
             "think_tokens": rows[i]["tokens"] if rows[i]["thought"] else 0,
             "answer_tokens": 0 if rows[i]["thought"] else rows[i]["tokens"], "hidden_tokens": 0} for i in ids]


def set_report(rows: dict[str, dict], base: dict[str, dict], start: dict[str, dict] | None = None) -> dict:
    """Report of one set (module contract): `rows` learned rows by id, `base` the base's forced rows by id,
    `start` (optional) the learned rows of the checkpoint training started from, by id."""
    from evals.stats import paired, summarize, wilson

    ids = sorted(rows, key=_id_order)
    learned = _scored(rows, ids)
    k = sum(r["thought"] for r in learned)
    out = {"n": len(ids), "think_rate": k / len(ids) if ids else 0.0, "think_rate_ci": list(wilson(k, len(ids))),
           "learned": summarize(learned)}
    common = [i for i in ids if i in base]
    if common:
        def mode(name):
            rs = []
            for i in common:
                b = base[i]
                think = {"never": False, "always": True, "oracle": b["think_score"] > b["direct_score"]}[name]
                rs.append({"id": i, "score": b["think_score"] if think else b["direct_score"], "thought": think,
                           "think_tokens": b["think_tokens"] if think else 0,
                           "answer_tokens": 0 if think else b["direct_tokens"], "hidden_tokens": 0})
            return rs
        lc = [r for r in learned if r["id"] in base]
        base_modes = {m: mode(m) for m in ("never", "always", "oracle")}
        out["n_paired"] = len(common)
        out["base"] = {m: summarize(r) for m, r in base_modes.items()}
        out["learned_vs_always"] = paired(lc, base_modes["always"])
        out["learned_vs_never"] = paired(lc, base_modes["never"])
        same = [{"id": r["id"], "score": base[r["id"]]["think_score" if r["thought"] else "direct_score"]} for r in lc]
        out["drift"] = paired(lc, same)
        out["tokens_vs_always"] = (out["learned"]["total_tokens"] / out["base"]["always"]["total_tokens"]
                                   if out["base"]["always"]["total_tokens"] else None)
    both = [i for i in ids if i in (start or {})]
    if both:
        s_rows, t_rows = _scored(start, both), _scored(rows, both)
        out["n_start"] = len(both)
        out["start"], out["this_on_start"] = summarize(s_rows), summarize(t_rows)
        out["vs_start"] = paired(t_rows, s_rows)
    return out


def report(args) -> dict:
    """The ``report`` command: report.json and report.md under ``<out>/<model>``."""
    out_dir = Path(args.out) / Path(args.model).name
    res = {"model": args.model, "split": args.split, "base": args.base, "sets": {}}
    all_rows, all_base, all_start = {}, {}, {}
    for name in args.sets:
        rows = _read(rows_path(Path(args.out), args.model, args.split, name))
        if not rows:
            raise FileNotFoundError(f"no rows for {args.split}/{name} under {out_dir}: run `python -m evals.learned run` first")
        base = _read(Path(args.base) / f"{args.split}-{name}.jsonl") if args.base else {}
        start = _read(Path(args.start) / f"{args.split}-{name}.jsonl") if args.start else {}
        if args.start and not start:
            raise FileNotFoundError(f"no start rows {args.split}-{name}.jsonl under {args.start}")
        res["sets"][name] = set_report(rows, base, start)
        check = rows_path(Path(args.out), args.model, args.split, name).with_suffix(".agent-check.json")
        if check.is_file():
            res["sets"][name]["agent_check"] = json.loads(check.read_text())
        if name in args.mix:
            all_rows.update(rows)
            all_base.update(base)
            all_start.update(start)
    if all_rows:
        mix = set_report(all_rows, all_base, all_start)
        res["mix"] = {"sets": args.mix, **mix}
    lines = [f"# learned decision of {args.model} ({args.split} split; base rows {args.base})", "",
             "| set | n | think-rate [95 % CI] | learned acc [95 % CI] · tokens | base never | base always | base oracle "
             "| learned − always [95 % CI], p | learned − never [95 % CI], p | tokens / always | drift (same branch) |",
             "|" + "---|" * 11]
    for name, r in list(res["sets"].items()) + ([("mix (" + " + ".join(args.mix) + ")", res["mix"])] if "mix" in res else []):
        lo, hi = r["think_rate_ci"]
        s = r["learned"]
        cells = [name, str(r["n"]), f"{r['think_rate']:.2f} [{lo:.2f}, {hi:.2f}]",
                 f"{s['accuracy']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] · {s['total_tokens']:.0f}"]
        if "base" in r:
            for m in ("never", "always", "oracle"):
                b = r["base"][m]
                cells.append(f"{b['accuracy']:.3f} · {b['total_tokens']:.0f}")
            for key in ("learned_vs_always", "learned_vs_never"):
                p = r[key]
                cells.append(f"{p['diff']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}], p {p['mcnemar_p']:.2g}")
            cells.append(f"{r['tokens_vs_always']:.2f}" if r["tokens_vs_always"] is not None else "—")
            d = r["drift"]
            cells.append(f"{d['diff']:+.3f} ({d['a_only']} up, {d['b_only']} down)")
        else:
            cells += ["—"] * 7
        lines.append("| " + " | ".join(cells) + " |")
    starts = [(name, r) for name, r in list(res["sets"].items()) + ([("mix", res["mix"])] if "mix" in res else [])
              if "vs_start" in r]
    if starts:
        lines += ["", f"Against the start ({args.start}), the same items:", "",
                  "| set | n | start think-rate | start acc · tokens | this acc · tokens | this − start [95 % CI], p (up / down) |",
                  "|" + "---|" * 6]
        for name, r in starts:
            s0, s1, d = r["start"], r["this_on_start"], r["vs_start"]
            lines.append(f"| {name} | {r['n_start']} | {s0['think_rate']:.2f} → {s1['think_rate']:.2f} | "
                         f"{s0['accuracy']:.3f} · {s0['total_tokens']:.0f} | {s1['accuracy']:.3f} · {s1['total_tokens']:.0f} | "
                         f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], p {d['mcnemar_p']:.2g} "
                         f"({d['a_only']} / {d['b_only']}) |")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(res, indent=1))
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


def auroc_report(args) -> dict:
    """The ``auroc`` command (module contract); returns what it writes to ``<out>/<model>/auroc.json``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evals.stats import auroc
    from policy.models import resolve_policy
    from policy.modes import think_sequences
    from tasks import prompt_ids
    from training.decision import _items_for, p_think

    base: list[dict] = []
    for name in args.sets:
        rows_of_set = _read(Path(args.base) / f"{args.split}-{name}.jsonl")
        if not rows_of_set:
            raise FileNotFoundError(f"no base rows {args.split}-{name}.jsonl under {args.base}")
        base += rows_of_set.values()
    items = _items_for(base)  # each row's item rebuilt from its set and split seed (LookupError if it cannot be)
    path = resolve_policy(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    think_id = think_sequences(tok)[0][0]
    rows = [{"id": r["id"], "prompt": prompt_ids(tok, items[r["id"]]),
             "helped": r["think_score"] > r["direct_score"], "wrong_direct": r["direct_score"] < 1.0,
             "gate": r["draft_entropy"]} for r in base]
    ps = p_think(model, tok, [r["prompt"] for r in rows], think_id)
    res = {"model": args.model, "split": args.split, "sets": args.sets, "n": len(rows),
           "helped": sum(r["helped"] for r in rows), "wrong_direct": sum(r["wrong_direct"] for r in rows)}
    for label in ("helped", "wrong_direct"):
        y = [r[label] for r in rows]
        res[f"auroc_p_think_vs_{label}"] = auroc(ps, y)
        res[f"auroc_gate_vs_{label}"] = auroc([r["gate"] for r in rows], y)
    res["items"] = [{"id": r["id"], "p_think": round(p, 5)} for r, p in zip(rows, ps)]
    out_dir = Path(args.out) / Path(args.model).name
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "auroc.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "items"}, indent=1))
    return res


def main(argv: list[str] | None = None) -> None:
    """CLI entry; bad input exits 2 with a one-line message (`evals.cli.dispatch`)."""
    from evals.cli import dispatch, generation_args

    ap = argparse.ArgumentParser(prog="python -m evals.learned", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="answer held-out items on the branch the model's first token picks")
    r.add_argument("--model", required=True, help="registered name or checkpoint dir (a training.decision output)")
    r.add_argument("--sets", nargs="+", default=["gsm", "multidigit", "onestep", "letters", "times"])
    r.add_argument("--split", choices=[s for s in SPLITS if s != "train"], default="test")
    r.add_argument("--n", type=int, default=150)
    generation_args(r, think_tokens=512)
    r.add_argument("--out", default="docs/results/learned")
    r.add_argument("--index", default=None, help="index dir: retrieve passages for sets served with retrieval (docs)")
    r.add_argument("--agent-check", type=int, default=0, help="run the served agent on K items per set and compare")
    p = sub.add_parser("report", help="think-rate, accuracy and tokens against the base's forced modes")
    p.add_argument("--model", required=True)
    p.add_argument("--sets", nargs="+", default=["gsm", "multidigit", "onestep", "letters", "times"])
    p.add_argument("--mix", nargs="+", default=["gsm", "multidigit", "onestep"])
    p.add_argument("--split", choices=[s for s in SPLITS if s != "train"], default="test")
    p.add_argument("--base", default=None, help="dir of the base model's evals.quality rows (<split>-<set>.jsonl)")
    p.add_argument("--start", default=None, help="dir of the starting checkpoint's rows of `run` (<split>-<set>.jsonl)")
    p.add_argument("--out", default="docs/results/learned")
    a = sub.add_parser("auroc", help="p(think) of the checkpoint ranked against 'thinking helped' on the base's rows")
    a.add_argument("--model", required=True)
    a.add_argument("--sets", nargs="+", default=["gsm", "multidigit", "onestep"])
    a.add_argument("--split", choices=[s for s in SPLITS if s != "train"], default="test")
    a.add_argument("--base", required=True, help="dir of the base model's evals.quality rows (<split>-<set>.jsonl)")
    a.add_argument("--out", default="docs/results/learned")
    dispatch(ap, {"run": run, "report": report, "auroc": auroc_report}, argv)


if __name__ == "__main__":
    main()
