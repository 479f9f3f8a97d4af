"""``python -m evals.quality``: answer quality of a served policy, at once and step by step, and its gate.

Contract:
- ``run``: every item of each set (`tasks.load_items`: gsm, multidigit, onestep, docs, …; a split
  seed) is answered twice, greedily, on the served backend (`policy.models.load_policy`, onnx on a
  CPU) and on the served prompt (`tasks.render_prompt`, passages retrieved as the agent does when
  ``--index`` is given):
  * direct: the model's `AgentConfig.answer_prefix` (``Answer:``) is forced and the answer drafted
    up to ``--direct-tokens``, stopping at a blank line — exactly the agent's gate draft, whose mean
    entropy over its first `draft_tokens` tokens (nats) is the gate's score;
  * step by step: ``<think>\\n`` forced, reasoning up to ``--think-tokens`` (stop at ``</think>``),
    then ``\\n</think>\\n`` (or ``\\n`` after the model's own ``</think>``) + the prefix and the answer,
    as the agent's answer node writes it (a model that ends its turn inside ``<think>`` answers with
    its last paragraph, as in the agent).
  Rows are `evals.forced.ForcedRecord` dicts plus the draft's per-token entropies, appended to
  ``<out>/<model>/<split>-<set>.jsonl``; a re-run skips the ids already there (resumable).
- ``report``: per set, accuracy of both modes with 95 % Wilson intervals, their paired difference
  (95 % interval, exact McNemar p) and mean generated tokens; on the mix of the sets, the AUROC of
  the gate's score against "thinking helped" (`evals.stats.auroc`) beside its AUROC against hard vs
  easy and against a wrong direct answer, and two ceilings: the bucket label itself ranked against
  "helped" (what a perfect difficulty signal would reach on this mix) and "the direct answer is wrong"
  ranked against "helped" (what a perfect verifier of the direct answer would reach), τ_think calibrated on the dev
  rows (`evals.stats.calibrate`, entropy mode; ``--max-token-share`` a token budget, ``--share-confidence``
  the confidence it must hold at) and the held-out outcome of never / always / gated / oracle, on the
  test split or (``--test-split test2``) the second held-out split. Writes ``<out>/<model>/report.md``
  and ``report.json`` (``report-test2.*``); ``--write-calibration FILE`` writes the chosen thresholds as
  a ``thinkgate.json``.
- ``table``: several models side by side, one row per (set, model), from their rows on ``--split`` (test).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path

from evals.cli import log as _log
from tasks.numeric import SPLIT_SEEDS

SPLITS = SPLIT_SEEDS  # train rows are rollouts to learn from; test2 is read once, to confirm


async def answer_direct(policy, prompt: list[int], cfg, direct_tokens: int):
    """The direct answer of one prompt, as the agent's gate drafts it: `cfg.answer_prefix` forced, up to
    `direct_tokens`, stopping at a blank line. Returns the `policy.base.Generation`."""
    from policy.base import GenerationParams
    from policy.format import THINK_OPEN

    lead = policy.tokenize(cfg.answer_prefix) if cfg.answer_prefix else []
    return await policy.generate(prompt + lead, GenerationParams(max_tokens=direct_tokens, stop=("\n\n", THINK_OPEN)))


async def think_completion(policy, prompt: list[int], cfg, think_tokens: int, answer_tokens: int, *,
                           temperature: float = 0.0, seed: int | None = None) -> dict:
    """The step-by-step answer of one prompt (see the module contract), with its entropies.

    ``<think>`` is forced, the reasoning runs to ``</think>``, the end of the turn or `think_tokens`
    (sampled at `temperature` with `seed`; 0 = greedy), then the agent's answer opening
    (`agent.nodes.answer_opening`) and a greedy answer of at most `answer_tokens`.

    Returns:
        dict: text (``<think>…</think>`` + answer), tokens (reasoning + answer), answer (the answer
        text alone), reasoning_entropy and answer_entropy (mean entropy per generated token, nats;
        0.0 when there were none).
    """
    from agent.nodes import answer_opening
    from policy.base import GenerationParams
    from policy.format import THINK_CLOSE, THINK_OPEN

    eos = set(policy.eos_token_ids)
    open_ids = policy.tokenize(THINK_OPEN + "\n")
    t = await policy.generate(prompt + open_ids, GenerationParams(max_tokens=think_tokens, stop=(THINK_CLOSE,),
                                                                  temperature=temperature, seed=seed))
    ids = t.token_ids[:-1] if t.token_ids and t.token_ids[-1] in eos else list(t.token_ids)
    ended = len(ids) < len(t.token_ids)
    reasoning = policy.detokenize(ids)
    answer_ent: list[float] = []
    if ended:  # the model ended its turn inside <think>: its last paragraph is its answer (agent.nodes.answer)
        paras = [p for p in reasoning.strip().split("\n\n") if p.strip()]
        answer, n_answer = (paras[-1] if paras else ""), 0
        text = f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n{answer}"
    else:
        closed = THINK_CLOSE in reasoning
        tail = answer_opening(policy, cfg.answer_prefix, closed)
        a = await policy.generate(prompt + open_ids + ids + tail, GenerationParams(max_tokens=answer_tokens,
                                                                                   stop=("\n\n",)))
        answer, n_answer, answer_ent = a.text, len(a.token_ids), list(a.entropies)
        text = f"{THINK_OPEN}\n{reasoning}" + ("\n" if closed else f"\n{THINK_CLOSE}\n") + answer
    ents = list(t.entropies)

    def mean(xs):
        return sum(xs) / len(xs) if xs else 0.0

    return {"text": text, "tokens": len(t.token_ids) + n_answer, "answer": answer,
            "reasoning_entropy": mean(ents), "answer_entropy": mean(answer_ent)}


async def answer_thinking(policy, prompt: list[int], cfg, think_tokens: int, answer_tokens: int) -> tuple[str, int]:
    """The greedy step-by-step answer of one prompt (`think_completion`): (``<think>…</think>`` + answer
    text, reasoning + answer tokens)."""
    c = await think_completion(policy, prompt, cfg, think_tokens, answer_tokens)
    return c["text"], c["tokens"]


async def answer_both(policy, prompt: list[int], cfg, direct_tokens: int, think_tokens: int,
                      answer_tokens: int) -> dict:
    """Direct and step-by-step completions of one prompt (see the module contract).

    Returns:
        dict with direct_text, direct_tokens, draft_entropies (nats, one per direct token),
        think_text (``<think>…</think>`` + answer), think_tokens (reasoning + answer tokens).
    """
    d = await answer_direct(policy, prompt, cfg, direct_tokens)
    text, n = await answer_thinking(policy, prompt, cfg, think_tokens, answer_tokens)
    return {"direct_text": d.text, "direct_tokens": len(d.token_ids), "draft_entropies": [round(e, 4) for e in d.entropies],
            "think_text": text, "think_tokens": n}


def draft_score(entropies: list[float], draft_tokens: int) -> tuple[float, int]:
    """(mean entropy in nats, tokens) of the first `draft_tokens` of a draft: the gate's score; (0, 0) when empty.

    >>> draft_score([1.0, 2.0, 9.0], 2)
    (1.5, 2)
    """
    ents = entropies[:draft_tokens]
    return (sum(ents) / len(ents) if ents else 0.0), len(ents)


def rows_path(out: Path, model: str, split: str, name: str) -> Path:
    return out / Path(model).name / f"{split}-{name}.jsonl"


def run(args) -> None:
    """The ``run`` command: answer every item of every set, appending rows (resumable)."""
    from agent.config import AgentConfig
    from policy.models import load_policy, resolve_policy
    from tasks import family, load_items, render_prompt
    from tasks.prompt import item_passages

    path = resolve_policy(args.model)
    cfg = AgentConfig.for_model(path, answer_prefix=args.answer_prefix)
    policy = load_policy(args.model, backend=args.backend, precision=args.precision)
    retriever = None
    if args.index:
        from retrieval.retriever import Retriever

        retriever = Retriever(Path(args.index))
    for name in args.sets:
        items = load_items(name, args.n, SPLITS[args.split])
        dest = rows_path(Path(args.out), args.model, args.split, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        done = {json.loads(ln)["id"] for ln in dest.read_text().splitlines()} if dest.exists() else set()
        todo = [it for it in items if it.id not in done]
        _log(f"{args.model} {args.split}/{name}: {len(todo)} of {len(items)} items to answer")
        t0, toks = time.perf_counter(), 0
        for k, it in enumerate(todo, 1):
            passages = item_passages(it, retriever, cfg, policy.special_tokens)
            it.meta["shown"] = [p["source"] for p in passages or []]  # what a citation scorer checks
            prompt = policy.tokenize(render_prompt(policy.tokenizer, it, passages))
            r = asyncio.run(answer_both(policy, prompt, cfg, args.direct_tokens, args.think_tokens, args.answer_tokens))
            fam = family(it)
            score, n_draft = draft_score(r["draft_entropies"], cfg.draft_tokens)
            row = {"id": it.id, "family": it.family, "bucket": it.bucket, "p_think": 0.0, "learned_think": False,
                   "draft_entropy": score, "draft_tokens": n_draft,
                   "direct_text": r["direct_text"], "direct_tokens": r["direct_tokens"],
                   "direct_score": fam.score(r["direct_text"], it), "think_text": r["think_text"],
                   "think_tokens": r["think_tokens"], "think_score": fam.score(r["think_text"], it),
                   "meta": {"set": name, "answer": it.answer, "question": it.question[:300],
                            "draft_entropies": r["draft_entropies"],
                            "sources": it.meta["shown"]}}
            with dest.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            toks += r["direct_tokens"] + r["think_tokens"]
            if k % 10 == 0 or k == len(todo):
                dt = time.perf_counter() - t0
                _log(f"  {k}/{len(todo)}  {toks / dt:.1f} tok/s  eta {dt / k * (len(todo) - k) / 60:.1f} min")


def load_rows(out: Path, model: str, split: str, sets: list[str], draft_tokens: int | None = None) -> list:
    """ForcedRecords of `model` on `split` over `sets` (rows that exist); `draft_tokens` re-scores the
    gate's draft over that many leading tokens."""
    from evals.forced import ForcedRecord

    recs = []
    for name in sets:
        p = rows_path(out, model, split, name)
        if not p.exists():
            continue
        for ln in p.read_text().splitlines():
            d = json.loads(ln)
            if draft_tokens:
                d["draft_entropy"], d["draft_tokens"] = draft_score(d["meta"]["draft_entropies"], draft_tokens)
            recs.append(ForcedRecord(**d))
    return recs


def report(args) -> dict:
    """The ``report`` command (see the module contract); returns what it writes to report.json."""
    from evals.stats import auroc, calibrate, decide, helped, paired, summarize

    out = Path(args.out)
    res: dict = {"model": args.model, "sets": {}, "mix": {}}
    lines = [f"# {args.model}: answered at once vs step by step (greedy, served backend)", "",
             "| set | n | at once [95 % CI] | step by step [95 % CI] | Δ [95 % CI] | McNemar p | tokens at once | tokens step by step |",
             "|---|---|---|---|---|---|---|---|"]
    for name in args.sets:
        recs = load_rows(out, args.model, args.test_split, [name])
        if not recs:
            continue
        never, always = decide(recs, "never"), decide(recs, "always")
        sn, sa, pd = summarize(never), summarize(always), paired(always, never)
        res["sets"][name] = {"never": sn, "always": sa, "always_minus_never": pd}
        lines.append(f"| {name} | {len(recs)} | {sn['accuracy']:.3f} [{sn['ci_low']:.3f}, {sn['ci_high']:.3f}] | "
                     f"{sa['accuracy']:.3f} [{sa['ci_low']:.3f}, {sa['ci_high']:.3f}] | {pd['diff']:+.3f} "
                     f"[{pd['ci_low']:+.3f}, {pd['ci_high']:+.3f}] | {pd['mcnemar_p']:.3g} | {sn['total_tokens']:.1f} | "
                     f"{sa['total_tokens']:.1f} |")
    test = load_rows(out, args.model, args.test_split, args.mix, args.draft_tokens)
    dev = load_rows(out, args.model, "dev", args.mix, args.draft_tokens)
    if test:
        au = auroc([r.draft_entropy for r in test], helped(test))
        res["mix"]["auroc_test"] = au
        res["mix"]["n_test"] = len(test)
        res["mix"]["helped_test"] = sum(helped(test))
        hurt = sum(r.think_score < r.direct_score for r in test)
        hard = [r.bucket == "hard" for r in test]
        wrong = [r.direct_score <= 0 for r in test]
        companions = {"hard_vs_easy": auroc([r.draft_entropy for r in test], hard),
                      "direct_wrong": auroc([r.draft_entropy for r in test], wrong),
                      "difficulty_ceiling": auroc([float(h) for h in hard], helped(test)),
                      "wrong_direct_ceiling": auroc([float(w) for w in wrong], helped(test))}
        res["mix"]["hurt_test"] = hurt
        res["mix"]["auroc_companions_test"] = companions
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        lines += ["", f"## The gate on the mix ({', '.join(args.mix)}; draft of {args.draft_tokens or 'the agent'}'s tokens after "
                      f"the forced prefix)", "",
                  f"AUROC of the draft's mean entropy against 'thinking helped' on {args.test_split}: **{au:.3f}** "
                  f"(n = {len(test)}, helped on {sum(helped(test))}, hurt on {hurt}). The same score against "
                  f"hard vs easy: {fmt(companions['hard_vs_easy'])}; against a wrong direct answer: "
                  f"{fmt(companions['direct_wrong'])}. A score that knew the bucket exactly (hard above easy) would "
                  f"rank 'helped' at {fmt(companions['difficulty_ceiling'])}: the ceiling of any difficulty signal "
                  f"on this mix; one that knew exactly which direct answers are wrong, at "
                  f"{fmt(companions['wrong_direct_ceiling'])} (thinking helps only where the direct answer is wrong, "
                  f"but fails on most of those)."]
        if dev:
            res["mix"]["auroc_dev"] = auroc([r.draft_entropy for r in dev], helped(dev))
            cal = calibrate(dev, args.cost_per_100, mode="entropy", max_token_share=args.max_token_share,
                            share_confidence=args.share_confidence)
            tau = cal["tau_think"]
            res["mix"]["calibration"] = {k: v for k, v in cal.items() if k != "sweep"}
            rows = {m: decide(test, m, tau) for m in ("never", "always", "entropy", "oracle")}
            s = {m: summarize(v) for m, v in rows.items()}
            res["mix"]["test"] = s
            res["mix"]["gated_minus_never"] = paired(rows["entropy"], rows["never"])
            res["mix"]["gated_minus_always"] = paired(rows["entropy"], rows["always"])
            ratio = s["entropy"]["total_tokens"] / max(s["always"]["total_tokens"], 1e-9)
            res["mix"]["gated_token_share_of_always"] = ratio
            budget = (f", within {args.max_token_share:.0%} of always-think's tokens" if args.max_token_share else "")
            if args.share_confidence:
                budget += (f" at {args.share_confidence:.0%} confidence (bootstrap upper bound on dev "
                           f"{cal['share_upper_bound_dev']:.1%}; dev point estimate "
                           f"{cal['dev']['total_tokens'] / max(summarize(decide(dev, 'always'))['total_tokens'], 1e-9):.1%})")
            lines += [f"τ_think calibrated on dev (n = {len(dev)}, AUROC {res['mix']['auroc_dev']:.3f}; objective accuracy − "
                      f"{args.cost_per_100} × tokens / 100{budget}): **{tau}** nats.", "",
                      f"| mode ({args.test_split}) | accuracy [95 % CI] | think-rate | mean generated tokens |", "|---|---|---|---|"]
            for m, label in (("never", "never think"), ("always", "always think"), ("entropy", f"gated (τ {tau})"),
                             ("oracle", "oracle")):
                lines.append(f"| {label} | {s[m]['accuracy']:.3f} [{s[m]['ci_low']:.3f}, {s[m]['ci_high']:.3f}] | "
                             f"{s[m]['think_rate']:.2f} | {s[m]['total_tokens']:.1f} |")
            gn, ga = res["mix"]["gated_minus_never"], res["mix"]["gated_minus_always"]
            lines += ["", f"gated − never: {gn['diff']:+.3f} [{gn['ci_low']:+.3f}, {gn['ci_high']:+.3f}], p {gn['mcnemar_p']:.3g}; "
                          f"gated − always: {ga['diff']:+.3f} [{ga['ci_low']:+.3f}, {ga['ci_high']:+.3f}], p {ga['mcnemar_p']:.3g}; "
                          f"gated tokens = {ratio:.1%} of always-think's."]
            if args.write_calibration:
                from policy.models import default_precision

                dest_cal = Path(args.write_calibration)
                kept = json.loads(dest_cal.read_text()) if dest_cal.is_file() else {}
                weights = default_precision(args.model)
                comment = (f"calibrated by python -m evals.quality report on dev (seed {SPLITS['dev']}, n {len(dev)}, "
                           f"{weights}) of {', '.join(args.mix)} with --cost-per-100 "
                           f"{args.cost_per_100} --max-token-share {args.max_token_share}"
                           + (f" --share-confidence {args.share_confidence}" if args.share_confidence else ""))
                if "max_think_tokens" in kept:  # the reasoning budget the rows were measured at stays stated
                    comment += f"; max_think_tokens {kept['max_think_tokens']}: the budget of the rows (run --think-tokens)"
                calib = {"_comment": comment, "answer_prefix": args.answer_prefix or "Answer:",
                         "tau_think": tau, "draft_tokens": args.draft_tokens or 16,
                         "calibrated": {"backend": "onnx", "weights": weights,
                                        "n_dev": len(dev), "auroc_dev": round(res["mix"]["auroc_dev"], 4),
                                        "cost_per_100": args.cost_per_100, "max_token_share": args.max_token_share,
                                        **({"share_confidence": args.share_confidence} if args.share_confidence else {}),
                                        f"auroc_{args.test_split}": round(au, 4)}}
                kept.update(calib)  # other settings of the file (budgets) stay
                dest_cal.write_text(json.dumps(kept, indent=2) + "\n")
    dest = out / Path(args.model).name
    stem = "report" if args.test_split == "test" else f"report-{args.test_split}"
    (dest / f"{stem}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (dest / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


def table(args) -> str:
    """The ``table`` command: one markdown row per (set, model) from the models' rows on ``--split``
    (test by default), side by side (accuracy at once and step by step with 95 % intervals, paired Δ,
    McNemar p, mean tokens)."""
    from evals.stats import decide, paired, summarize

    out = Path(args.out)
    lines = ["| set | model | n | at once [95 % CI] | step by step [95 % CI] | Δ step − once [95 % CI], McNemar p | "
             "tokens at once / step by step |", "|---|---|---|---|---|---|---|"]
    for name in args.sets:
        for model in args.models:
            recs = load_rows(out, model, args.split, [name])
            if not recs:
                continue
            never, always = decide(recs, "never"), decide(recs, "always")
            sn, sa, pd = summarize(never), summarize(always), paired(always, never)
            lines.append(f"| {name} | {model} | {len(recs)} | {sn['accuracy']:.3f} [{sn['ci_low']:.3f}, {sn['ci_high']:.3f}] | "
                         f"{sa['accuracy']:.3f} [{sa['ci_low']:.3f}, {sa['ci_high']:.3f}] | {pd['diff']:+.3f} "
                         f"[{pd['ci_low']:+.3f}, {pd['ci_high']:+.3f}], p {pd['mcnemar_p']:.2g} | "
                         f"{sn['total_tokens']:.0f} / {sa['total_tokens']:.0f} |")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None) -> None:
    """CLI entry."""
    from evals.cli import generation_args

    ap = argparse.ArgumentParser(prog="python -m evals.quality", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="answer the items of each set at once and step by step (resumable)")
    r.add_argument("--model", default=None, help="registered name or checkpoint dir (default: the served default)")
    r.add_argument("--sets", nargs="+", default=["gsm", "multidigit", "onestep"])
    r.add_argument("--split", choices=list(SPLITS), default="test")
    r.add_argument("--n", type=int, default=150, help="items per set")
    generation_args(r, think_tokens=256)
    r.add_argument("--precision", default=None)
    r.add_argument("--index", default=None, help="index dir: retrieve passages for items that use retrieval")
    r.add_argument("--answer-prefix", default=None, help="override the model's AgentConfig.answer_prefix")
    r.add_argument("--out", default="docs/results/quality")
    p = sub.add_parser("report", help="tables, AUROC and calibration from the rows of run")
    p.add_argument("--model", required=True)
    p.add_argument("--sets", nargs="+", default=["gsm", "multidigit", "onestep", "docs"])
    p.add_argument("--mix", nargs="+", default=["gsm", "multidigit", "onestep", "docs"])
    p.add_argument("--draft-tokens", type=int, default=None, help="gate draft length to score (default: as run)")
    p.add_argument("--cost-per-100", type=float, default=0.05, help="calibration: accuracy points per 100 tokens")
    p.add_argument("--max-token-share", type=float, default=None,
                   help="calibration: only τ whose dev tokens are at most this share of always-think's")
    p.add_argument("--share-confidence", type=float, default=None,
                   help="calibration: the share must hold at this confidence (bootstrap upper bound on dev), e.g. 0.95")
    p.add_argument("--test-split", choices=["test", "test2"], default="test",
                   help="the held-out split the tables and the calibrated gate are reported on")
    p.add_argument("--answer-prefix", default=None)
    p.add_argument("--write-calibration", default=None, help="write the chosen thresholds to this thinkgate.json")
    p.add_argument("--out", default="docs/results/quality")
    t = sub.add_parser("table", help="the models side by side on the test rows of each set")
    t.add_argument("--models", nargs="+", required=True)
    t.add_argument("--sets", nargs="+", default=["gsm", "multidigit", "onestep", "docs", "written", "task"])
    t.add_argument("--split", choices=list(SPLITS), default="test", help="whose rows: test, or dev for a go/no-go")
    t.add_argument("--out", default="docs/results/quality")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        from policy.models import DEFAULT_POLICY

        args.model = args.model or DEFAULT_POLICY
        run(args)
    elif args.cmd == "table":
        table(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
