"""``python -m evals.modes`` (also ``thinkgate eval``): does it think only when it needs to?

For each checkpoint and task set (`tasks.load_items`: arith-easy, arith-hard, arith, docs,
ntr) every held-out item is answered greedily and batched (`evals.forced`): a free draft, forced
to answer at once and forced to think, on the served prompt (passages above the agent's
relevance score included). The modes of `evals.stats` — never, always, learned (the model's
own choice in its free draft), gated (the agent's gate: the model's choice or draft entropy > τ), entropy
(entropy alone), oracle — are read off those pairs, per bucket and on the mix, with 95 %
intervals, paired tests (exact McNemar), and the AUROC of p(<think>) and of the draft
entropy against "thinking helped this item". On NTR sets (``ntr``, ``ntr-arith``: the
position after ``=`` in a sum) it also reports the mean information gain of the forced
thought (`tasks.ntr.information_gain`, RLP), and on docs NTR rows (scored by a proxy model's
top-16 entropy) the think-rate on high- vs low-entropy positions (`think_rate_by_entropy`).

τ comes from the model's ``thinkgate.json``; with ``--calibrate`` it is picked on the dev
split (seed 2; test is seed 3; training uses seed 1 with dev/test expressions removed) and
written there. ``--agent-check K`` runs the real agent (`agent.runner.Agent`, gated) on K
evenly spaced test items of each set and reports how often its decision and score match the
derived ones.

Outputs in ``--out``: ``results.json``, ``table.md`` (every mode with its tokens split),
``summary.md`` (one row per model and bucket), ``ntr.md`` (NTR sets: information gain, think-rate by
position entropy), ``pareto.png``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.config import AgentConfig
from evals.cli import log as _log
from evals.stats import MODES, auroc, calibrate, decide, helped, paired, summarize


@dataclass
class EvalArgs:
    """Arguments of one evaluation (see ``--help``)."""

    models: list[str]
    tasks: list[str]
    n: int = 150
    seed: int = 3
    dev_seed: int = 2
    index: str | None = None
    ntr_file: str | None = None
    out: str = "docs/results/eval"
    calibrate: bool = False
    cost_per_100: float = 0.05
    max_tokens: int = 48
    think_tokens: int = 192
    batch_size: int = 32
    agent_check: int = 0
    samples: int = 0
    temperature: float = AgentConfig.vote_temperature
    tau_vote: float | None = None


def build_prompts(items, tokenizer, retriever, cfg) -> list[list[int]]:
    """Served prompt ids of `items`: passages retrieved and filtered as the agent does (`tasks.prompt.item_passages`)."""
    from tasks import prompt_ids
    from tasks.prompt import item_passages

    return [prompt_ids(tokenizer, it, item_passages(it, retriever, cfg, tokenizer.all_special_tokens)) for it in items]


def report(records, tau: float, tau_entropy: float | None = None) -> dict:
    """Per bucket (and ``all``): every mode's summary, paired tests and AUROCs; ``gated`` at `tau`,
    ``entropy`` at `tau_entropy` (default `tau`)."""
    buckets = sorted({r.bucket for r in records})
    groups = {b: [r for r in records if r.bucket == b] for b in buckets}
    if len(buckets) > 1:
        groups["all"] = list(records)
    out = {}
    for name, recs in groups.items():
        rows = {m: decide(recs, m, tau_entropy if (m == "entropy" and tau_entropy is not None) else tau)
                for m in MODES}
        lab = helped(recs)
        out[name] = {
            "modes": {m: summarize(r) for m, r in rows.items()},
            "always_vs_never": paired(rows["always"], rows["never"]),
            "learned_vs_never": paired(rows["learned"], rows["never"]),
            "learned_vs_always": paired(rows["learned"], rows["always"]),
            "gated_vs_never": paired(rows["gated"], rows["never"]),
            "gated_vs_always": paired(rows["gated"], rows["always"]),
            "entropy_vs_never": paired(rows["entropy"], rows["never"]),
            "entropy_vs_always": paired(rows["entropy"], rows["always"]),
            "auroc_p_think": auroc([r.p_think for r in recs], lab),
            "auroc_draft_entropy": auroc([r.draft_entropy for r in recs], lab),
            "helped_rate": sum(lab) / len(lab),
        }
    return out


def information_gains(lm, tok, items, records) -> dict:
    """Mean information gain (nats, RLP) of each item's forced thought for its target, with a 95 % t-interval."""
    from scipy.stats import t as student

    from policy.format import split_think
    from tasks import prompt_ids
    from tasks.ntr import information_gain

    gains = []
    for it, r in zip(items, records):
        thought = split_think(r.think_text)[0] or ""
        prompt = prompt_ids(tok, it)
        gains.append(information_gain(lm, tok, prompt, thought, it.answer))
    n = len(gains)
    mean = sum(gains) / n
    sd = (sum((g - mean) ** 2 for g in gains) / (n - 1)) ** 0.5 if n > 1 else 0.0
    half = float(student.ppf(0.975, n - 1)) * sd / n ** 0.5 if n > 1 else 0.0
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half,
            "positive_rate": sum(g > 0 for g in gains) / n}


def think_rate_by_entropy(records, tau: float) -> dict | None:
    """Does the policy think more where the next token is harder? For NTR records whose item carries
    the proxy model's position entropy (``meta["entropy"]``, nats; bucket ``hard`` = at or above the
    file's threshold): for the ``learned`` and ``gated`` (at `tau`) modes, the think-rate on hard
    minus easy positions (`evals.stats.two_proportions`), and the Spearman correlation of p(<think>)
    and of the draft entropy with the position entropy. None when no record has an entropy."""
    from scipy.stats import spearmanr

    from evals.stats import two_proportions

    recs = [r for r in records if (r.meta or {}).get("entropy") is not None]
    hard = [r for r in recs if r.bucket == "hard"]
    easy = [r for r in recs if r.bucket != "hard"]
    if not hard or not easy:
        return None
    out: dict = {"n_hard": len(hard), "n_easy": len(easy)}
    for mode in ("learned", "gated"):
        k = [sum(d["thought"] for d in decide(g, mode, tau)) for g in (hard, easy)]
        out[mode] = two_proportions(k[0], len(hard), k[1], len(easy))
    ent = [r.meta["entropy"] for r in recs]
    for name, sig in (("p_think", [r.p_think for r in recs]), ("draft_entropy", [r.draft_entropy for r in recs])):
        rho = spearmanr(sig, ent)
        out[f"spearman_{name}"] = {"rho": float(rho.statistic), "p": float(rho.pvalue)}
    return out


async def agent_check(model_path: str, items, records, tau: float, retriever, k: int,
                      backend: str = "transformers") -> dict:
    """Run the real agent (gated, τ) on `k` evenly spaced items (both buckets); agreement with the
    derived gated rows (decision and score). On ``backend="transformers"`` (fp32, the engine of
    the forced passes) this checks the harness; on ``"onnx"`` (int8, what is served on a CPU) it
    measures how far quantization moves the served agent from the evaluated one."""
    from agent.runner import Agent
    from policy.models import load_policy
    from tasks import family

    policy = load_policy(model_path, backend=backend)
    cfg = AgentConfig.for_model(model_path, tau_think=tau)
    derived = decide(records, "gated", tau)
    same_decision = same_score = 0
    step = max(1, len(items) // k)
    pairs = list(zip(items, derived))[::step][:k]
    for it, d in pairs:
        agent = Agent(policy, retriever if it.retrieval else None, cfg)
        # the served defaults: no client limit (the config's think and answer budgets)
        turn = await agent.run([{"role": "user", "content": it.question}], effort="auto")
        score = family(it).score(turn.answer, it)
        same_decision += turn.thought == d["thought"]
        same_score += score == d["score"]
    await policy.close()
    n = len(pairs)
    return {"n": n, "backend": policy.backend, "weights": policy.weights,
            "decision_agreement": same_decision / n, "score_agreement": same_score / n}


def evaluate_model(args: EvalArgs, model: str, task_sets: dict, dev_sets: dict) -> dict:
    """Forced generations, calibration and reports for one model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.config import CALIBRATION_FILE
    from evals.forced import run_forced
    from policy.models import resolve_policy

    path = str(resolve_policy(model))
    cfg = AgentConfig.for_model(path)
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    retriever = None
    if any(it.retrieval for items in task_sets.values() for it in items):
        if args.index is None:
            raise ValueError("task sets with retrieval (docs) need --index DIR")
        from retrieval.retriever import Retriever

        retriever = Retriever(args.index)

    def forced(items):
        return run_forced(lm, tok, items, build_prompts(items, tok, retriever, cfg), think_tokens=args.think_tokens,
                          answer_tokens=args.max_tokens, draft_tokens=cfg.draft_tokens, batch_size=args.batch_size,
                          log=_log)

    res: dict = {"path": path, "tau_think": cfg.tau_think, "sets": {}, "records": {}}
    tau = cfg.tau_think
    if args.calibrate:
        dev = [r for items in dev_sets.values() for r in forced(items)]
        cal = calibrate(dev, args.cost_per_100)
        res["calibration"] = cal
        tau = cal["tau_think"]
        cal_path = Path(path) / CALIBRATION_FILE
        current = json.loads(cal_path.read_text()) if cal_path.is_file() else {}
        current.update({"tau_think": tau, "calibrated": {"backend": "transformers", "weights": "fp32",
                                                         "cost_per_100": args.cost_per_100, "tasks": args.tasks,
                                                         "dev_seed": args.dev_seed, "n": args.n, "dev": cal["dev"]}})
        cal_path.write_text(json.dumps(current, indent=2))
        _log(f"calibrated tau_think={tau} for {model} → {cal_path}")
    res["tau_used"] = tau
    tau_entropy = None
    if args.calibrate:  # the entropy signal alone, calibrated the same way (reported, not written)
        res["calibration_entropy"] = calibrate(dev, args.cost_per_100, mode="entropy")
        tau_entropy = res["calibration_entropy"]["tau_think"]
    for name, items in task_sets.items():
        t0 = time.time()
        if name == "ntr-arith":  # rows need this model's tokenizer (token boundaries)
            from tasks.ntr import arithmetic_rows, row_item

            items = [row_item(r, i) for i, r in enumerate(arithmetic_rows(tok, args.n, args.seed))]
        recs = forced(items)
        res["sets"][name] = report(recs, tau, tau_entropy)
        if args.samples > 1 and not name.startswith("ntr"):
            add_scaling(res["sets"][name], lm, tok, items, build_prompts(items, tok, retriever, cfg), recs, args,
                        args.tau_vote if args.tau_vote is not None else cfg.tau_exit, tau)
        if name.startswith("ntr"):
            res["sets"][name]["information_gain"] = information_gains(lm, tok, items, recs)
            res["sets"][name]["think_rate_by_entropy"] = think_rate_by_entropy(recs, tau)
        res["sets"][name]["seconds"] = time.time() - t0
        res["records"][name] = [asdict(r) for r in recs]
        if args.agent_check and not name.startswith("ntr"):  # NTR prompts are not the agent's
            res["sets"][name]["agent_check"] = asyncio.run(
                agent_check(path, items, recs, tau, retriever, args.agent_check))
            from policy.models import default_backend

            if default_backend() == "onnx":  # the served engine too
                res["sets"][name]["agent_check_served"] = asyncio.run(agent_check(
                    path, items, recs, tau, retriever, args.agent_check, backend="onnx"))
    return res


def add_scaling(per_bucket: dict, lm, tok, items, prompts, recs, args: EvalArgs, tau_vote: float,
                tau_think: float) -> None:
    """Test-time scaling modes (`evals.scaling`) added to each bucket's report: vote@K, adaptive
    (on top of the gate at `tau_think` nats, sampling only where the greedy trace's mean entropy
    exceeds `tau_vote` nats), best-of-K; with paired tests of adaptive against always, against the
    gate alone and against vote@K."""
    from evals.scaling import sample_think, scaling_rows, trace_entropy

    samples = sample_think(lm, tok, items, prompts, k=args.samples - 1, think_tokens=args.think_tokens,
                           temperature=args.temperature, seed=args.seed, log=_log)
    ent = trace_entropy(lm, tok, prompts, [r.think_text for r in recs])
    for bucket, rep in per_bucket.items():
        keep = [i for i, r in enumerate(recs) if bucket == "all" or r.bucket == bucket]
        rows = scaling_rows([items[i] for i in keep], [recs[i] for i in keep], [samples[i] for i in keep],
                            [ent[i] for i in keep], tau_vote, tau_think=tau_think)
        for mode, r in rows.items():
            rep["modes"][mode] = summarize(r)
        always = decide([recs[i] for i in keep], "always")
        gated = decide([recs[i] for i in keep], "gated", tau_think)
        fixed = next(m for m in rows if m.startswith("vote@"))
        rep["adaptive_vs_always"] = paired(rows["adaptive"], always)
        rep["adaptive_vs_gated"] = paired(rows["adaptive"], gated)
        rep[f"adaptive_vs_{fixed}"] = paired(rows["adaptive"], rows[fixed])
        rep["vote_trigger_rate"] = sum(1 for i, g in zip(keep, gated) if g["thought"] and ent[i] > tau_vote) / len(keep)
        rep["tau_vote"] = tau_vote
        rep["trace_entropy"] = [[recs[i].id, ent[i], recs[i].think_score] for i in keep]
    # per item, for re-analysis at other thresholds: greedy (entropy, score, tokens) and the samples
    per_bucket["samples"] = {recs[i].id: {"greedy": [ent[i], recs[i].think_score, recs[i].think_tokens,
                                                      recs[i].learned_think, recs[i].direct_score, recs[i].direct_tokens],
                                          "samples": [[s.key, s.score, s.tokens, round(s.certainty, 4)]
                                                      for s in samples[i]]}
                             for i in range(len(recs))}


def write_outputs(out: Path, results: dict) -> None:
    """results.json, table.md and pareto.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table(results))
    (out / "summary.md").write_text(compact_table(results))
    ntr = ntr_table(results)
    if ntr:
        (out / "ntr.md").write_text(ntr)
    plot(out / "pareto.png", results)


def table(results: dict) -> str:
    """Markdown: one row per model, set, bucket and mode."""
    lines = ["| model | set | bucket | mode | n | accuracy [95% CI] | think tok | answer tok | total tok | think-rate |",
             "|" + "---|" * 10]
    for model, res in results["models"].items():
        for set_name, per_bucket in res["sets"].items():
            for bucket, rep in per_bucket.items():
                if not isinstance(rep, dict) or "modes" not in rep:
                    continue
                for mode, s in rep["modes"].items():
                    lines.append(f"| {Path(model).name} | {set_name} | {bucket} | {mode} | {s['n']} | "
                                 f"{s['accuracy']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] | "
                                 f"{s['think_tokens']:.1f} | {s['answer_tokens']:.1f} | {s['total_tokens']:.1f} | "
                                 f"{s['think_rate']:.2f} |")
    return "\n".join(lines) + "\n"


def compact_table(results: dict) -> str:
    """Markdown: per model and bucket, each mode as accuracy [95 % CI] · mean tokens · think-rate."""
    modes = ("never", "always", "learned", "gated", "entropy", "oracle")
    lines = ["| model | set / bucket | " + " | ".join(modes) + " |", "|" + "---|" * (2 + len(modes))]
    for model, res in results["models"].items():
        for set_name, per_bucket in res["sets"].items():
            for bucket, rep in per_bucket.items():
                if not isinstance(rep, dict) or "modes" not in rep:
                    continue
                cells = [f"{m['accuracy']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}] · {m['total_tokens']:.0f} · "
                         f"{m['think_rate']:.2f}" for m in (rep["modes"][k] for k in modes)]
                lines.append(f"| {Path(model).name} | {set_name} / {bucket} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ntr_table(results: dict) -> str:
    """Markdown for NTR sets ("" without any): mean information gain (nats, 95 % t-interval) and
    the think-rate on hard (high-entropy) vs easy positions, learned and gated, with the difference's
    95 % Newcombe interval and Fisher p."""
    lines = []
    for model, res in results["models"].items():
        for set_name, rep in res["sets"].items():
            ig, tr = rep.get("information_gain"), rep.get("think_rate_by_entropy")
            if ig is None:
                continue
            cells = [f"{ig['mean']:+.2f} [{ig['ci_low']:+.2f}, {ig['ci_high']:+.2f}] (n {ig['n']})"]
            for mode in ("learned", "gated"):
                t = (tr or {}).get(mode)
                cells.append("—" if t is None else
                             f"{t['rate_a']:.2f} vs {t['rate_b']:.2f}: {t['diff']:+.2f} "
                             f"[{t['ci_low']:+.2f}, {t['ci_high']:+.2f}], p {t['fisher_p']:.2g}")
            rho = (tr or {}).get("spearman_p_think")
            cells.append("—" if rho is None else f"{rho['rho']:+.2f} (p {rho['p']:.2g})")
            lines.append(f"| {Path(model).name} | {set_name} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    head = ["| model | set | information gain, nats | think-rate hard vs easy, learned | "
            "think-rate hard vs easy, gated | Spearman p(<think>) vs position entropy |", "|" + "---|" * 6]
    return "\n".join(head + lines) + "\n"


def plot(path: Path, results: dict) -> None:
    """Accuracy against mean generated tokens, one panel per (set, bucket), a marker per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(s, b) for res in results["models"].values() for s, per in res["sets"].items()
                     for b, rep in per.items() if isinstance(rep, dict) and "modes" in rep})
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    markers = {"never": "s", "always": "^", "learned": "*", "gated": "o", "entropy": "D", "oracle": "x",
               "adaptive": "P"}
    for ax, (s, b) in zip(axes[0], panels):
        for ci, (model, res) in enumerate(results["models"].items()):
            for mode, st in res["sets"].get(s, {}).get(b, {}).get("modes", {}).items():
                ax.errorbar(st["total_tokens"], st["accuracy"],
                            yerr=[[max(0.0, st["accuracy"] - st["ci_low"])], [max(0.0, st["ci_high"] - st["accuracy"])]],
                            fmt=markers.get(mode, "."), color=f"C{ci}", ms=7, capsize=2,
                            label=f"{Path(model).name} {mode}")
        ax.set_title(f"{s} / {b}")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("mean generated tokens")
        ax.set_ylabel("accuracy")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main_eval(args: EvalArgs) -> dict:
    """Run the evaluation and write the outputs; returns the results dict."""
    from tasks import load_items

    t0 = time.time()
    task_sets = {name: ([] if name == "ntr-arith" else load_items(name, args.n, args.seed, args.ntr_file))
                 for name in args.tasks}
    dev_sets = {}
    if args.calibrate:
        dev_sets = {name: load_items(name, args.n, args.dev_seed, args.ntr_file)
                    for name in args.tasks if name.startswith("arith")}
    results = {"args": asdict(args), "models": {}}
    for model in args.models:
        results["models"][model] = evaluate_model(args, model, task_sets, dev_sets)
    results["seconds"] = time.time() - t0
    write_outputs(Path(args.out), results)
    print((Path(args.out) / "table.md").read_text())
    return results


def main(argv: list[str] | None = None) -> None:
    """CLI entry; bad arguments exit 2 with a one-line message."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="python -m evals.modes", description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct"], help="registered names or checkpoint dirs")
    ap.add_argument("--tasks", nargs="+", default=["arith"],
                    help="arith-easy arith-hard arith docs ntr ntr-arith (next-token positions after '=' in sums)")
    ap.add_argument("--n", type=int, default=150, help="items per task set (per bucket for arith)")
    ap.add_argument("--seed", type=int, default=3, help="test split seed (training uses 1, dev 2)")
    ap.add_argument("--dev-seed", type=int, default=2)
    ap.add_argument("--index", default=None, help="index dir for the docs task set")
    ap.add_argument("--ntr-file", default=None, help="NTR rows (ntr_dataset.jsonl of a training run)")
    ap.add_argument("--out", default="docs/results/eval")
    ap.add_argument("--calibrate", action="store_true", help="pick tau_think on the dev split and write thinkgate.json")
    ap.add_argument("--cost-per-100", type=float, default=0.05, help="accuracy traded per 100 generated tokens")
    ap.add_argument("--max-tokens", type=int, default=48, help="answer token budget (direct mode)")
    ap.add_argument("--think-tokens", type=int, default=192, help="token budget of a think completion")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--agent-check", type=int, default=0, help="run the real agent on K evenly spaced items of each set")
    ap.add_argument("--samples", type=int, default=0,
                    help="K > 1: add test-time scaling modes vote@K, adaptive, best-of-K (evals.scaling)")
    ap.add_argument("--temperature", type=float, default=EvalArgs.temperature,
                    help="sampling temperature of the voting samples (default: the agent's vote_temperature)")
    ap.add_argument("--tau-vote", type=float, default=None,
                    help="adaptive voting starts when the greedy trace's mean entropy exceeds this (nats; "
                         "default: the model's tau_exit); pick it on the dev split")
    ns = ap.parse_args(argv)
    if ns.n < 1:
        ap.error(f"--n must be >= 1, got {ns.n}")
    if ns.seed == ns.dev_seed or 1 in (ns.seed, ns.dev_seed):
        ap.error(f"--seed {ns.seed} and --dev-seed {ns.dev_seed} must differ and not be the training seed 1")
    args = EvalArgs(models=ns.models, tasks=ns.tasks, n=ns.n, seed=ns.seed, dev_seed=ns.dev_seed, index=ns.index,
                    ntr_file=ns.ntr_file, out=ns.out, calibrate=ns.calibrate, cost_per_100=ns.cost_per_100,
                    max_tokens=ns.max_tokens, think_tokens=ns.think_tokens, batch_size=ns.batch_size,
                    agent_check=ns.agent_check, samples=ns.samples, temperature=ns.temperature,
                    tau_vote=ns.tau_vote)
    if ns.samples == 1 or ns.samples < 0:
        ap.error(f"--samples must be 0 (off) or >= 2, got {ns.samples}")
    try:
        main_eval(args)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
