"""Retrieval inside reasoning, measured (issue 29): the served agent on the two-hop task family
(`tasks.hops`) with its retrieval modes side by side.

Contract:
- ``python -m evals.hops run --types bridge single --n 150 --seed 3 --modes once flare --efforts auto high``
  builds the task index once (`tasks.hops.build_index`, the public ingest path, under the cache), then
  answers every item through the real agent (`agent.runner.Agent`, the served backend) in each
  (mode, effort) and appends one JSON row per answer to ``<out>/rows.jsonl`` (resumable: rows already
  there are skipped). Modes (`MODES`):
  * ``once``: retrieve once, the question only (``max_retrievals=0``);
  * ``flare``: today's agent: a ``<search>`` the model writes, or a step whose mean entropy exceeds
    τ_retrieve (FLARE, arXiv 2305.06983; DRAGIN, arXiv 2403.10081), pulls passages into
    ``<information>`` (up to ``max_retrievals``);
  With ``--model`` a trained checkpoint is measured the same way (its learned ``<search>`` shows as
  retrievals with trigger ``model``).
- A row: item id, type, bucket, mode, effort, score (`tasks.hops.HopsFamily.score`), searches (the
  turn's retrievals other than the question's, by trigger), whether every gold page was shown, the
  generated tokens (reasoning + answer + information excluded), decision, seconds.
- ``python -m evals.hops report --out DIR`` → ``summary.md`` / ``summary.json``: per type, mode and
  effort the accuracy with a 95 % Wilson interval, searches per question, gold-page recall, generated
  tokens and think-rate; and each mode against ``once`` at the same effort, paired on items
  (`evals.stats.paired`: difference with its interval and the exact McNemar p). ``--baseline DIR``
  also pairs every group with another run's retrieve-once rows (same type and effort, shared items):
  a trained model against the base retrieving once; ``--start DIR`` pairs every group with the rows of
  the same type, mode and effort of the run of the checkpoint training started from (RL against its warm-up).
- Self-consistency is off (``samples=1``): the comparison is of retrieval, not of voting.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

MODES = {"once": {"max_retrievals": 0}, "flare": {}}
EFFORTS = ("none", "auto", "high")


def cache_dir() -> Path:
    from policy.models import cache_dir as root

    return root() / "hops"


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


async def run(types: list[str], n: int, seed: int, modes: list[str], efforts: list[str], out: Path,
              model: str | None = None, backend: str = "onnx", min_passage_score: float | None = None,
              max_think_tokens: int | None = None, precision: str | None = None, log=print) -> Path:
    """Answer the items through the served agent in every (mode, effort); append rows (see module).

    Raises:
        ValueError: an unknown mode or effort.
    """
    from agent.config import AgentConfig
    from agent.runner import Agent
    from policy.models import load_policy, resolve_policy
    from tasks import family, load_items
    from tasks.hops import build_index

    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}; known: {list(MODES)}")
    for e in efforts:
        if e not in EFFORTS:
            raise ValueError(f"unknown effort {e!r}; known: {list(EFFORTS)}")
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    done = {(r["id"], r["mode"], r["effort"]) for r in _rows(rows_path)}
    retriever = build_index(cache_dir() / "corpus", cache_dir() / "index")
    path = resolve_policy(model)
    policy = load_policy(model, backend=backend, **({"precision": precision} if precision else {}))
    items = [it for t in types for it in load_items(f"hops-{t}", n, seed)]
    try:
        with rows_path.open("a") as f:
            for mode in modes:
                for effort in efforts:
                    cfg = AgentConfig.for_model(path, min_passage_score=min_passage_score,
                                                max_think_tokens=max_think_tokens, **MODES[mode])
                    agent = Agent(policy, retriever, cfg)
                    todo = [it for it in items if (it.id, mode, effort) not in done]
                    t0 = time.perf_counter()
                    for i, it in enumerate(todo):
                        turn = await agent.run([{"role": "user", "content": it.question}], effort=effort, samples=1)
                        rets = turn.details.get("retrievals") or []
                        shown = {s["source"].rsplit("/", 1)[-1] for s in turn.details.get("sources") or []}
                        tk = turn.tokens.to_dict()
                        row = {"id": it.id, "type": it.meta["type"], "bucket": it.bucket, "mode": mode, "effort": effort,
                               "model": Path(model).name if model else "base", "score": family(it).score(turn.answer, it),
                               "searches": sum(1 for r in rets if r["trigger"] != "question"),
                               "triggers": [r["trigger"] for r in rets if r["trigger"] != "question"],
                               "queries": [r["query"] for r in rets if r["trigger"] != "question"],
                               "gold_shown": all(s in shown for s in it.meta["sources"]),
                               "generated": tk.get("reasoning", 0) + tk.get("answer", 0) + tk.get("draft", 0)
                               + tk.get("probe", 0), "thought": turn.thought, "answer": turn.answer[:300],
                               "seconds": round(turn.seconds, 2)}
                        f.write(json.dumps(row) + "\n")
                        f.flush()
                        if (i + 1) % 25 == 0 or i + 1 == len(todo):
                            log(f"{mode}/{effort}: {i + 1}/{len(todo)} ({(time.perf_counter() - t0) / (i + 1):.1f} s each)")
    finally:
        await policy.close()
    return rows_path


def _pair(rs: list[dict], base: list[dict]) -> dict:
    """`evals.stats.paired` of `rs` against `base` on the items both answered, both in id order."""
    from evals.stats import paired

    ids = {r["id"] for r in rs} & {r["id"] for r in base}
    shared = lambda xs: sorted((r for r in xs if r["id"] in ids), key=lambda r: r["id"])
    return paired(shared(rs), shared(base))


def _grouped(run_dir: Path | None, role: str, key) -> dict[tuple, list[dict]]:
    """Rows of another run directory grouped by ``key(row)`` (rows keyed None are left out); empty
    without a directory.

    Raises:
        FileNotFoundError: `run_dir` has no rows.jsonl (the message names its `role`).
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    if run_dir is None:
        return groups
    if not (run_dir / "rows.jsonl").exists():
        raise FileNotFoundError(f"no rows.jsonl in the {role} directory {run_dir}")
    for r in _rows(run_dir / "rows.jsonl"):
        if (k := key(r)) is not None:
            groups[k].append(r)
    return groups


def report(out: Path, baseline: Path | None = None, start: Path | None = None) -> dict:
    """Summaries and paired comparisons of ``<out>/rows.jsonl`` (see the module docstring);
    writes ``summary.json`` and ``summary.md``.

    With `baseline` (another run directory, e.g. the base model's), every group is also paired with
    that run's retrieve-once rows of the same type and effort, on the items both answered
    (``vs_baseline``: the Done-when comparison of a trained model against the base retrieving once).
    With `start` (the run of the checkpoint training started from, e.g. the search warm-up before GRPO),
    every group is also paired with that run's rows of the same type, mode and effort (``vs_start``).

    Raises:
        FileNotFoundError: `baseline` or `start` has no rows.
    """
    from evals.stats import wilson

    rows = _rows(out / "rows.jsonl")
    base_groups = _grouped(baseline, "baseline", lambda r: (r["type"], r["effort"]) if r["mode"] == "once" else None)
    start_groups = _grouped(start, "start", lambda r: (r["type"], r["mode"], r["effort"]))
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["type"], r["mode"], r["effort"])].append(r)
    summary = []
    for (model, typ, mode, effort), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["id"])
        n, k = len(rs), sum(r["score"] for r in rs)
        lo, hi = wilson(k, n)
        entry = {"model": model, "type": typ, "mode": mode, "effort": effort, "n": n, "accuracy": k / n,
                 "ci": [lo, hi], "searches": sum(r["searches"] for r in rs) / n,
                 "gold_shown": sum(r["gold_shown"] for r in rs) / n,
                 "generated": sum(r["generated"] for r in rs) / n, "think_rate": sum(r["thought"] for r in rs) / n}
        base = groups.get((model, typ, "once", effort))
        if mode != "once" and base:
            entry["vs_once"] = _pair(rs, base)
        if base_groups.get((typ, effort)):
            entry["vs_baseline"] = _pair(rs, base_groups[(typ, effort)])
        if start_groups.get((typ, mode, effort)):
            entry["vs_start"] = _pair(rs, start_groups[(typ, mode, effort)])
        summary.append(entry)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = ["| model | type | mode | effort | n | accuracy [95 % CI] | searches / question | gold pages shown | "
             "generated tokens | think-rate | vs once (paired Δ, McNemar p) |" + (" vs baseline once (n, paired Δ, p) |" if base_groups else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if base_groups else "")]
    if start_groups:
        lines[0] += " vs start, same mode (n, paired Δ, p) |"
        lines[1] += "---|"
    fmt = lambda vs: f"{vs['diff']:+.3f} [{vs['ci_low']:+.3f}, {vs['ci_high']:+.3f}], p {vs['mcnemar_p']:.2g}" if vs else ""
    for e in summary:
        vs_s = fmt(e.get("vs_once"))
        if base_groups:
            vb = e.get("vs_baseline")
            vs_s += " | " + (f"{vb['n']}: {fmt(vb)}" if vb else "")
        if start_groups:
            vt = e.get("vs_start")
            vs_s += " | " + (f"{vt['n']}: {fmt(vt)}" if vt else "")
        lines.append(f"| {e['model']} | {e['type']} | {e['mode']} | {e['effort']} | {e['n']} | {e['accuracy']:.3f} "
                     f"[{e['ci'][0]:.3f}, {e['ci'][1]:.3f}] | {e['searches']:.2f} | {e['gold_shown']:.2f} | "
                     f"{e['generated']:.1f} | {e['think_rate']:.2f} | {vs_s} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return {"summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evals.hops", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="answer the items through the agent, appending rows")
    r.add_argument("--types", nargs="+", default=["bridge", "single"], help="question types (tasks.hops.TYPES)")
    r.add_argument("--n", type=int, default=150, help="items per type")
    r.add_argument("--seed", type=int, default=3, help="split seed: 1 train, 2 dev, 3 test")
    r.add_argument("--modes", nargs="+", default=["once", "flare"], help=f"retrieval modes {list(MODES)}")
    r.add_argument("--efforts", nargs="+", default=["auto"], help=f"reasoning efforts {list(EFFORTS)}")
    r.add_argument("--model", default=None, help="registry name or checkpoint dir (default: the served default)")
    r.add_argument("--backend", default="onnx", help="policy backend (onnx: what a CPU serves)")
    r.add_argument("--precision", default=None, help="onnx weights (int4, int8, fp32; default: the model's)")
    r.add_argument("--min-passage-score", type=float, default=None, help="override the agent's passage threshold")
    r.add_argument("--max-think-tokens", type=int, default=None, help="override the agent's reasoning budget")
    r.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("report", help="summaries of a run directory")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--baseline", type=Path, default=None,
                   help="another run directory: pair every group with its retrieve-once rows (same type, effort)")
    p.add_argument("--start", type=Path, default=None,
                   help="the run of the starting checkpoint: pair every group with its rows of the same type, mode, effort")
    ns = ap.parse_args(argv)
    try:
        if ns.cmd == "run":
            asyncio.run(run(ns.types, ns.n, ns.seed, ns.modes, ns.efforts, ns.out, ns.model, ns.backend,
                            ns.min_passage_score, ns.max_think_tokens, ns.precision))
        print((ns.out / "summary.md").read_text() if report(ns.out, getattr(ns, "baseline", None), getattr(ns, "start", None)) else "")
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"evals.hops: {e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
