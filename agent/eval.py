"""``python -m agent.eval`` (also ``thinkgate eval``): does it think only when needed?

Runs the agent in-process over task sets (see `agent.tasks`) in three modes — ``never``
(reasoning_effort none), ``always`` (high), ``gated`` (auto: the entropy gate at the model's
τ) — for one or more checkpoints, and reports per model, task set and mode: accuracy, mean
generated tokens (thinking and answer apart; hidden draft/probe tokens counted in the total),
think-rate, retrievals per question, latency p50/p95.

τ sweep and calibration: the gate's decision depends only on the draft score, and its
thinking path is exactly the ``always`` path, so gated(τ) is read off the never/always runs
of the same question: the never result when score ≤ τ, else the always result plus the
discarded draft's tokens. (The real ``gated`` run checks this: the agreement is reported.)
With ``--calibrate`` the first half of every task set is the dev split: τ_think maximising
accuracy − cost × tokens / 100 there is evaluated on the second half and written to
``thinkgate.json`` next to the model, which the agent then uses.

Outputs in ``--out``: ``results.json``, ``table.md``, ``pareto.png``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MODES = {"never": "none", "always": "high", "gated": "auto"}


@dataclass
class EvalArgs:
    """Arguments of one evaluation (see ``--help``)."""

    models: list[str]
    tasks: list[str]
    n: int = 20
    modes: tuple[str, ...] = ("never", "always", "gated")
    index: str | None = None
    ntr_file: str | None = None
    out: str = "docs/results/eval"
    calibrate: bool = False
    cost_per_100: float = 0.05
    max_tokens: int = 48
    seed: int = 0


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile q ∈ [0, 100] of `xs` (0.0 for an empty list)."""
    if not xs:
        return 0.0
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def record(task, mode: str, turn, score: float, support: bool | None) -> dict:
    """One result row: score, tokens (thinking/answer/hidden/total), decision, draft score, latency."""
    t = turn.metadata["tokens"]
    think = t["reasoning"]
    answer = t["draft"] + t["answer"]
    hidden = t["probe"]
    return {"task": task.id, "mode": mode, "score": score, "support": support,
            "think_tokens": think, "answer_tokens": answer, "hidden_tokens": hidden,
            "total_tokens": think + answer + hidden, "thought": turn.metadata["decision"] == "think",
            "draft_score": turn.metadata["entropy"].get("mean"),
            "draft_tokens": turn.metadata["draft"].get("tokens", 0) if turn.metadata["draft"] else 0,
            "retrievals": sum(1 for r in turn.metadata["retrievals"] if r["trigger"] != "question"),
            "latency": turn.seconds, "meta": task.meta, "answer": turn.answer[:300]}


def summarize(rows: list[dict]) -> dict:
    """Aggregate rows of one (model, task set, mode)."""
    n = len(rows)
    if n == 0:
        return {}
    lat = [r["latency"] for r in rows if r.get("latency") is not None]
    out = {"n": n, "accuracy": sum(r["score"] for r in rows) / n,
           "think_tokens": sum(r["think_tokens"] for r in rows) / n,
           "answer_tokens": sum(r["answer_tokens"] for r in rows) / n,
           "total_tokens": sum(r["total_tokens"] for r in rows) / n,
           "think_rate": sum(r["thought"] for r in rows) / n,
           "retrievals": sum(r["retrievals"] for r in rows) / n,
           "latency_p50": percentile(lat, 50), "latency_p95": percentile(lat, 95)}
    sup = [r["support"] for r in rows if r.get("support") is not None]
    if sup:
        out["support"] = sum(sup) / len(sup)
    hard = [r for r in rows if r["meta"].get("hard") is not None]
    for flag, name in ((True, "hard"), (False, "easy")):
        sel = [r for r in hard if bool(r["meta"]["hard"]) == flag]
        if sel:
            out[f"think_rate_{name}"] = sum(r["thought"] for r in sel) / len(sel)
    return out


def simulate_gate(never: list[dict], always: list[dict], tau: float) -> list[dict]:
    """gated(τ) rows from paired never/always rows of the same tasks (see the module docstring)."""
    out = []
    for nv, al in zip(never, always):
        if nv["draft_score"] is not None and nv["draft_score"] <= tau:
            out.append(dict(nv, mode=f"gated@{tau:.3f}", thought=False))
        else:
            out.append(dict(al, mode=f"gated@{tau:.3f}", thought=True, latency=None,
                            hidden_tokens=al["hidden_tokens"] + nv["draft_tokens"],
                            total_tokens=al["total_tokens"] + nv["draft_tokens"]))
    return out


def tau_grid(never_rows: list[dict]) -> list[float]:
    """Candidate τ values: just below every observed draft score, plus the extremes."""
    scores = sorted({round(r["draft_score"], 4) for r in never_rows if r["draft_score"] is not None})
    return [0.0] + [s - 1e-4 for s in scores] + [max(scores, default=0.0) + 1.0]


def objective(rows: list[dict], cost_per_100: float) -> float:
    """Accuracy − cost × mean generated tokens / 100."""
    s = summarize(rows)
    return s["accuracy"] - cost_per_100 * s["total_tokens"] / 100


async def run_model(args: EvalArgs, model: str, task_sets: dict, log) -> tuple[dict[str, dict[str, list]], object]:
    """Every task × mode for one model; returns rows[set][mode] and the policy's AgentConfig."""
    from agent.config import AgentConfig
    from agent.runner import Agent
    from agent.tasks import docs_support
    from policy.models import load_policy, resolve_policy

    policy = load_policy(model)
    cfg = AgentConfig.for_model(resolve_policy(model))
    retriever = None
    if any(t.retrieval for ts in task_sets.values() for t in ts):
        from retrieval.retriever import Retriever

        if args.index is None:
            raise ValueError("task sets with retrieval (docs) need --index DIR")
        retriever = Retriever(args.index)
    with_r, without_r = Agent(policy, retriever, cfg), Agent(policy, None, cfg)

    def passage_text(chunk_id: int) -> str:
        row = retriever.index.db.execute("SELECT text FROM chunks WHERE id=?", (chunk_id,)).fetchone()
        return row[0] if row else ""

    rows: dict[str, dict[str, list]] = {}
    for set_name, tasks in task_sets.items():
        rows[set_name] = {m: [] for m in args.modes}
        for i, task in enumerate(tasks):
            agent = with_r if task.retrieval else without_r
            for mode in args.modes:
                turn = await agent.run([{"role": "user", "content": task.question}], effort=MODES[mode],
                                       max_tokens=args.max_tokens)
                score = task.score(turn.answer, turn.metadata)
                support = docs_support(task, turn.answer, turn.metadata, passage_text) if set_name == "docs" else None
                rows[set_name][mode].append(record(task, mode, turn, score, support))
                log(f"{model} {set_name} {i + 1}/{len(tasks)} {mode:6} score={score:.0f} "
                    f"tokens={rows[set_name][mode][-1]['total_tokens']} draft={turn.metadata['entropy'].get('mean')} "
                    f"{turn.seconds:.1f}s")
    return rows, cfg


def calibrate(rows: dict[str, dict[str, list]], cost: float) -> dict:
    """Pick τ_think on the dev halves (pooled), report it on the test halves."""
    dev_n, dev_a, test_n, test_a = [], [], [], []
    for per_mode in rows.values():
        nv, al = per_mode["never"], per_mode["always"]
        h = len(nv) // 2
        dev_n += nv[:h]
        dev_a += al[:h]
        test_n += nv[h:]
        test_a += al[h:]
    grid = tau_grid(dev_n)
    scored = [(objective(simulate_gate(dev_n, dev_a, t), cost), t) for t in grid]
    best_j, best = max(scored, key=lambda x: (x[0], x[1]))  # ties: the larger τ (less thinking)
    return {"tau_think": round(best, 4), "objective_dev": best_j, "cost_per_100": cost,
            "dev": summarize(simulate_gate(dev_n, dev_a, best)),
            "test": summarize(simulate_gate(test_n, test_a, best)),
            "test_never": summarize(test_n), "test_always": summarize(test_a),
            "sweep": [{"tau": t, "objective": j} for j, t in scored]}


def write_outputs(out: Path, results: dict) -> None:
    """results.json, table.md and pareto.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = ["| model | task set | mode | n | accuracy | think tok | answer tok | total tok | think-rate | "
             "retrievals/q | p50 s | p95 s |", "|" + "---|" * 12]
    for model, per_set in results["summary"].items():
        for set_name, per_mode in per_set.items():
            for mode, s in per_mode.items():
                lines.append(f"| {Path(model).name} | {set_name} | {mode} | {s['n']} | {s['accuracy']:.3f} | "
                             f"{s['think_tokens']:.1f} | {s['answer_tokens']:.1f} | {s['total_tokens']:.1f} | "
                             f"{s['think_rate']:.2f} | {s['retrievals']:.2f} | {s['latency_p50']:.2f} | "
                             f"{s['latency_p95']:.2f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(out / "pareto.png", results)


def plot(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({s for per_set in results["summary"].values() for s in per_set})
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    markers = {"never": "s", "always": "^", "gated": "o"}
    for ax, set_name in zip(axes[0], sets):
        for ci, (model, per_set) in enumerate(results["summary"].items()):
            color = f"C{ci}"
            sweep = results["sweeps"].get(model, {}).get(set_name, [])
            if sweep:
                pts = sorted((p["total_tokens"], p["accuracy"]) for p in sweep)
                ax.plot(*zip(*pts), "-", color=color, alpha=0.5, lw=1, label=f"{Path(model).name} τ sweep")
            for mode, s in per_set.get(set_name, {}).items():
                m = markers.get(mode.split("@")[0], "x")
                ax.plot(s["total_tokens"], s["accuracy"], m, color=color, ms=7,
                        label=f"{Path(model).name} {mode}")
        ax.set_title(set_name)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("mean generated tokens")
        ax.set_ylabel("accuracy")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def main_async(args: EvalArgs) -> dict:
    from agent.tasks import load_tasks

    t0 = time.time()
    task_sets = {name: load_tasks(name, args.n, args.seed, args.ntr_file) for name in args.tasks}
    results: dict = {"args": vars(args), "summary": {}, "sweeps": {}, "calibration": {}, "rows": {}}
    for model in args.models:
        rows, cfg = await run_model(args, model, task_sets, lambda m: print(m, file=sys.stderr, flush=True))
        results["rows"][model] = rows
        results["summary"][model] = {s: {m: summarize(r) for m, r in per.items()} for s, per in rows.items()}
        if "never" in args.modes and "always" in args.modes:
            sweeps = {}
            for s, per in rows.items():
                sweeps[s] = [dict(summarize(simulate_gate(per["never"], per["always"], t)), tau=t)
                             for t in tau_grid(per["never"])]
                if "gated" in args.modes:
                    sim = simulate_gate(per["never"], per["always"], cfg.tau_think)
                    agree = sum(a["thought"] == b["thought"] for a, b in zip(sim, per["gated"])) / len(sim)
                    results["summary"][model][s]["gated"]["decision_agreement_with_sweep"] = agree
            results["sweeps"][model] = sweeps
            if args.calibrate:
                from agent.config import CALIBRATION_FILE
                from policy.models import resolve_policy

                cal = calibrate(rows, args.cost_per_100)
                results["calibration"][model] = cal
                path = Path(resolve_policy(model)) / CALIBRATION_FILE
                current = json.loads(path.read_text()) if path.is_file() else {}
                current.update({"tau_think": cal["tau_think"],
                                "calibrated": {"cost_per_100": args.cost_per_100, "tasks": args.tasks,
                                               "n": args.n, "test": cal["test"]}})
                path.write_text(json.dumps(current, indent=2))
                print(f"calibrated tau_think={cal['tau_think']} for {model} → {path}", file=sys.stderr)
    results["seconds"] = time.time() - t0
    write_outputs(Path(args.out), results)
    print((Path(args.out) / "table.md").read_text())
    return results


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="python -m agent.eval", description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct"], help="registered names or checkpoint dirs")
    ap.add_argument("--tasks", nargs="+", default=["rg-easy", "rg-hard", "docs"],
                    help="rg-easy rg-hard rg-chain rg-gsm rg:NAME docs ntr")
    ap.add_argument("--n", type=int, default=20, help="questions per task set")
    ap.add_argument("--modes", nargs="+", default=["never", "always", "gated"], choices=list(MODES))
    ap.add_argument("--index", default=None, help="index dir for the docs task set")
    ap.add_argument("--ntr-file", default=None, help="NTR rows (ntr_dataset.jsonl of a training run)")
    ap.add_argument("--out", default="docs/results/eval")
    ap.add_argument("--calibrate", action="store_true", help="pick tau_think on the dev half and write thinkgate.json")
    ap.add_argument("--cost-per-100", type=float, default=0.05, help="accuracy points traded per 100 tokens")
    ap.add_argument("--max-tokens", type=int, default=48, help="answer token budget")
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(argv)
    if ns.n < 1:
        ap.error(f"--n must be >= 1, got {ns.n}")
    args = EvalArgs(models=ns.models, tasks=ns.tasks, n=ns.n, modes=tuple(ns.modes), index=ns.index,
                    ntr_file=ns.ntr_file, out=ns.out, calibrate=ns.calibrate, cost_per_100=ns.cost_per_100,
                    max_tokens=ns.max_tokens, seed=ns.seed)
    try:
        asyncio.run(main_async(args))
    except (ValueError, LookupError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
