"""``python -m evals.vote``: self-consistency (test-time scaling) of a policy on the served backend.

Contract:
- ``run``: for every held-out item of each set (`tasks.load_items`, a split seed) the served policy
  (`policy.models.load_policy`, onnx int8 on a CPU) takes its own first token on the served prompt
  (the learned decision, as `evals.learned` reads it; where it answers at once, that direct answer
  is kept too, `evals.quality.answer_direct`) and writes K step-by-step completions
  (`evals.quality.think_completion`): sample 1 greedy — the trace the agent writes —, samples 2…K
  with the reasoning sampled at the agent's ``vote_temperature``, seeded with the sample number as the
  agent seeds them. Rows {id, set, bucket, thought, direct | null, samples: [{key, score, tokens,
  reasoning_entropy, answer_entropy, text}]} are appended to ``<out>/<model>/<split>-<set>.vote.jsonl``;
  a re-run skips the ids already there and keeps what is stored.
- ``report``: per set, accuracy (95 % Wilson) and mean generated tokens of
  * ``always``: sample 1 (one greedy trace, always thinking);
  * ``learned``: the model's own decision (sample 1 when it thinks, else its direct answer);
  * ``vote@K``: the majority of all K samples (`agent.voting.vote`; ties: the more certain,
    certainty = −mean answer entropy, the greedy sample counting 0 as in the agent);
  * ``adaptive`` at each ``--tau`` (τ_vote, nats): what the agent serves at ``reasoning_effort=high``
    with ``decision: learned`` — the learned decision; when it thinks and the greedy reasoning's mean
    entropy exceeds τ_vote, samples in order until Adaptive-Consistency's Beta rule
    (`agent.voting.adaptive_vote`; Aggarwal et al., arXiv 2305.11860) or K;
  with paired differences (95 % interval, exact McNemar p; `evals.stats.paired`) of adaptive and
  vote@K against always, and adaptive's tokens as a share of vote@K's. Writes ``vote-<split>.md``
  and ``vote-<split>.json`` beside the rows.
  Not replayed: the agent's probes (it also skips voting when a probe ended thinking as certain).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from evals.cli import log as _log
from evals.quality import SPLITS, answer_direct, think_completion
from evals.stats import paired, summarize


def vote_path(out: Path, model: str, split: str, name: str) -> Path:
    """Where ``run`` writes the rows of one set."""
    return out / Path(model).name / f"{split}-{name}.vote.jsonl"


async def sample_item(policy, prompt: list[int], cfg, fam, item, think_id: int, k: int, direct_tokens: int,
                      think_tokens: int, answer_tokens: int) -> dict:
    """One row of ``run`` (module contract) for one item; `fam` is its `tasks` family."""
    from agent.voting import normalize_answer
    from policy.base import GenerationParams

    first = await policy.generate(prompt, GenerationParams(max_tokens=1))
    thought = first.token_ids[:1] == [think_id]
    direct = None
    if not thought:
        d = await answer_direct(policy, prompt, cfg, direct_tokens)
        direct = {"text": d.text, "tokens": len(d.token_ids), "score": fam.score(d.text, item)}
    samples = []
    for n in range(1, k + 1):
        c = await think_completion(policy, prompt, cfg, think_tokens, answer_tokens,
                                   temperature=0.0 if n == 1 else cfg.vote_temperature, seed=None if n == 1 else n)
        samples.append({"key": normalize_answer(fam.extract(c["text"])), "score": fam.score(c["text"], item),
                        "tokens": c["tokens"], "reasoning_entropy": round(c["reasoning_entropy"], 4),
                        "answer_entropy": round(c["answer_entropy"], 4), "text": c["text"]})
    return {"thought": thought, "direct": direct, "samples": samples}


def run(args) -> None:
    """The ``run`` command (module contract)."""
    from agent.config import AgentConfig
    from policy.format import THINK_OPEN
    from policy.models import load_policy, resolve_policy
    from tasks import family, load_items, render_prompt

    cfg = AgentConfig.for_model(resolve_policy(args.model))
    policy = load_policy(args.model, backend=args.backend)
    think_id = policy.tokenize(THINK_OPEN)[0]
    for name in args.sets:
        items = load_items(name, args.n, SPLITS[args.split])
        if any(it.retrieval for it in items):
            raise ValueError(f"set {name} is served with retrieval; evals.vote measures sets without it")
        dest = vote_path(Path(args.out), args.model, args.split, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        done = {json.loads(ln)["id"] for ln in dest.read_text().splitlines()} if dest.exists() else set()
        todo = [it for it in items if it.id not in done]
        _log(f"{args.model} {args.split}/{name}: {len(todo)} of {len(items)} items, {args.k} samples each")
        t0 = time.perf_counter()
        for j, it in enumerate(todo, 1):
            prompt = policy.tokenize(render_prompt(policy.tokenizer, it, []))
            r = asyncio.run(sample_item(policy, prompt, cfg, family(it), it, think_id, args.k, args.direct_tokens,
                                        args.think_tokens, args.answer_tokens))
            with dest.open("a") as fh:
                fh.write(json.dumps({"id": it.id, "set": name, "bucket": it.bucket, **r}) + "\n")
            _log(f"  {j}/{len(todo)}  {(time.perf_counter() - t0) / j:.1f} s/item")


def _mode_row(item_id: str, score: float, *, think: int | None = None, answer: int = 0, **extra) -> dict:
    """A mode's row in `evals.stats.summarize`'s shape: `think` tokens when it thought (None: answered
    at once with `answer` tokens)."""
    return {"id": item_id, "score": score, "thought": think is not None, "think_tokens": think or 0,
            "answer_tokens": answer, "hidden_tokens": 0, **extra}


def mode_rows(rows: list[dict], tau_vote: float, confidence: float = 0.95) -> dict[str, list[dict]]:
    """Per mode of the module contract, one row per row of ``run`` in the shape `evals.stats.summarize`
    reads: {id, score, thought, think_tokens (every sample's tokens), answer_tokens (a direct answer's),
    hidden_tokens (0)}; adaptive rows that voted add ``used`` (samples taken).

    Raises:
        ValueError: rows with different sample counts.
    """
    from agent.voting import adaptive_vote, normalize_answer, vote

    ks = {len(r["samples"]) for r in rows}
    if len(ks) != 1:
        raise ValueError(f"rows hold different sample counts {sorted(ks)}; re-run with one --k")
    k = ks.pop()
    out: dict[str, list[dict]] = {"always": [], "learned": [], f"vote@{k}": [], "adaptive": []}
    for r in rows:
        ss = r["samples"]
        keys = [normalize_answer(s["key"]) for s in ss]  # rows written before a key rule changed vote as now
        cert = [0.0] + [-s["answer_entropy"] for s in ss[1:]]
        score_of: dict[str, float] = {}
        for key, s in zip(keys, ss):
            score_of.setdefault(key, s["score"])
        greedy = _mode_row(r["id"], ss[0]["score"], think=ss[0]["tokens"])
        out["always"].append(greedy)
        learned = greedy if r["thought"] else _mode_row(r["id"], r["direct"]["score"], answer=r["direct"]["tokens"])
        out["learned"].append(learned)
        best, _ = vote(keys, cert)
        out[f"vote@{k}"].append(_mode_row(r["id"], score_of[best], think=sum(s["tokens"] for s in ss)))
        if not r["thought"] or ss[0]["reasoning_entropy"] <= tau_vote:
            out["adaptive"].append(learned)
        else:
            res = adaptive_vote(keys, cert, max_samples=k, confidence=confidence)
            out["adaptive"].append(_mode_row(r["id"], score_of[res.answer],
                                             think=sum(s["tokens"] for s in ss[: res.used]), used=res.used))
    return out


def report(args) -> dict:
    """The ``report`` command (module contract); returns what it writes to ``vote-<split>.json``."""
    taus = [float(t) for t in args.tau.split(",")]
    out: dict = {"model": args.model, "split": args.split, "sets": {}}
    lines = [f"# Self-consistency of {Path(args.model).name} ({args.split}, served backend)", "",
             "| set | τ_vote | n | always | learned | vote@K | adaptive | adaptive − always (paired) | "
             "vote@K − always (paired) | adaptive − vote@K | adaptive tokens / vote@K's |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.sets:
        path = vote_path(Path(args.out), args.model, args.split, name)
        if not path.exists():
            raise FileNotFoundError(f"no rows for {name}: run `python -m evals.vote run` first ({path})")
        rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        per_tau = []
        for tau in taus:
            m = mode_rows(rows, tau)
            kname = next(x for x in m if x.startswith("vote@"))
            s = {name_: summarize(v) for name_, v in m.items()}
            d = {"adaptive_vs_always": paired(m["adaptive"], m["always"]),
                 "vote_vs_always": paired(m[kname], m["always"]),
                 "adaptive_vs_vote": paired(m["adaptive"], m[kname])}
            share = s["adaptive"]["total_tokens"] / s[kname]["total_tokens"] if s[kname]["total_tokens"] else 0.0
            per_tau.append({"tau_vote": tau, "modes": s, "paired": d, "adaptive_token_share": share})

            def cell(x):
                return f"{x['accuracy']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}] · {x['total_tokens']:.0f}"

            def diff(p):
                return f"{100 * p['diff']:+.1f} [{100 * p['ci_low']:+.1f}, {100 * p['ci_high']:+.1f}], p {p['mcnemar_p']:.2g}"

            lines.append(f"| {name} | {tau:g} | {len(rows)} | {cell(s['always'])} | {cell(s['learned'])} | "
                         f"{cell(s[kname])} | {cell(s['adaptive'])} | {diff(d['adaptive_vs_always'])} | "
                         f"{diff(d['vote_vs_always'])} | {diff(d['adaptive_vs_vote'])} | {share:.2f} |")
        out["sets"][name] = per_tau
    lines += ["", "Cells: accuracy [95 % Wilson] · mean generated tokens per item (every sample counted). "
              "Differences in points, paired (95 % Wald, exact McNemar p)."]
    dest = vote_path(Path(args.out), args.model, args.split, "x").parent
    (dest / f"vote-{args.split}.json").write_text(json.dumps(out, indent=1))
    (dest / f"vote-{args.split}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI entry; bad input exits 2 with a one-line message (`evals.cli.dispatch`)."""
    from evals.cli import dispatch, generation_args

    ap = argparse.ArgumentParser(prog="python -m evals.vote", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="K step-by-step completions per held-out item (sample 1 greedy)")
    r.add_argument("--model", required=True, help="registered name or checkpoint dir")
    r.add_argument("--sets", nargs="+", default=["gsm"])
    r.add_argument("--split", choices=["dev", "test"], default="dev")
    r.add_argument("--n", type=int, default=150)
    r.add_argument("--k", type=int, default=8, choices=range(2, 33), metavar="K",
                   help="completions per item, the greedy one included (2-32)")
    generation_args(r, think_tokens=512)
    r.add_argument("--out", default="docs/results/vote")
    p = sub.add_parser("report", help="always, learned, vote@K and adaptive voting, paired")
    p.add_argument("--model", required=True)
    p.add_argument("--sets", nargs="+", default=["gsm"])
    p.add_argument("--split", choices=["dev", "test"], default="dev")
    p.add_argument("--tau", default="0", help="comma-separated τ_vote values (nats) to report adaptive at")
    p.add_argument("--out", default="docs/results/vote")
    dispatch(ap, {"run": run, "report": report}, argv)


if __name__ == "__main__":
    main()
