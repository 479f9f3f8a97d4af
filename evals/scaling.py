"""Test-time scaling in evaluation: sampled think completions per item and the voting modes read
off them (``python -m evals.modes --samples K``).

Contract:
- `sample_think(model, tokenizer, items, prompts, k=…)` → per item, `k` think completions sampled
  at `temperature` (seeded), each a `Sample` with its text, generated tokens, score (the task's
  scorer), vote key (`agent.voting.normalize_answer` of the task's extracted answer) and
  certainty: the mean log-prob (nats) of its answer tokens (after ``</think>``; the last 8 tokens
  when it never closes), teacher-forced on the unscaled distribution.
- `trace_entropy(model, tokenizer, prompts, texts)` → the mean entropy (nats) over the generated
  tokens of given think completions (the greedy ones): the "still uncertain after thinking"
  signal that triggers voting (the answer tokens alone were no signal: after a running-total
  trace the model copies the last total with near-zero entropy, right or wrong).
- `scaling_rows(records, samples, greedy_entropy, tau_vote, ...)` → `evals.stats.decide`-shaped
  rows for the modes ``vote@K`` (the greedy completion plus K−1 samples, majority),
  ``adaptive`` (on top of the served gate's decision — the model's own choice, or its draft's
  mean entropy above `tau_think`, as in `evals.stats.decide(..., "gated")`, hidden draft tokens
  counted the same way —: when it thinks and its greedy trace's mean entropy exceeds `tau_vote`,
  sample on, in order, until Adaptive-Consistency's Beta rule or K),
  and ``best-of-K`` (the most certain of the greedy completion and K−1 samples). Tokens count
  every generated token, samples included (as think tokens).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from agent.voting import adaptive_vote, normalize_answer, vote
from policy.format import THINK_CLOSE, THINK_OPEN
from policy.modes import eos_token_ids, left_pad
from tasks import Item, family

SCALING_MODES = ("vote", "adaptive", "best-of")


@dataclass
class Sample:
    """One sampled think completion: text (from ``<think>``), generated tokens, score, vote key,
    certainty (mean answer-token log-prob, nats)."""

    text: str
    tokens: int
    score: float
    key: str
    certainty: float


def _answer_stats(model, seqs: list[list[int]], starts: list[int], answer_from: list[int], batch: int = 8):
    """Per sequence: (mean log-prob of its tokens from answer_from on, mean entropy there), teacher-forced.

    seqs: prompt + completion ids; starts: where the completion starts; answer_from: index (into
    the sequence) of the first answer token."""
    import torch

    out = []
    pad = 0
    for b in range(0, len(seqs), batch):
        chunk = seqs[b: b + batch]
        ids, att = left_pad(chunk, pad)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=att).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for j, s in enumerate(chunk):
            shift = ids.shape[1] - len(s)  # left padding
            a = max(answer_from[b + j], starts[b + j])
            if a >= len(s):
                out.append((0.0, 0.0))
                continue
            pos = torch.arange(a, len(s)) + shift - 1  # logits at t-1 predict token t
            tok = torch.tensor(s[a:])
            lp = logp[j, pos].gather(1, tok[:, None]).squeeze(1)
            ent = -(logp[j, pos].exp() * logp[j, pos]).sum(-1)
            out.append((float(lp.mean()), float(ent.mean())))
    return out


def _answer_start(tokenizer, completion: list[int], close_ids: list[int]) -> int:
    """Index (in `completion`) of the first answer token: after the last ``</think>``; the last 8
    tokens when it never closes."""
    text_ids = list(completion)
    n = len(close_ids)
    for i in range(len(text_ids) - n, -1, -1):
        if text_ids[i: i + n] == close_ids:
            return i + n
    return max(0, len(text_ids) - 8)


def sample_think(model, tokenizer, items: list[Item], prompts: list[list[int]], *, k: int = 7,
                 think_tokens: int = 128, temperature: float = 0.7, seed: int = 0, batch_items: int = 8,
                 log=lambda msg: None) -> list[list[Sample]]:
    """`k` sampled think completions per item (see the module docstring).

    Raises:
        ValueError: `items` and `prompts` differ in length, or k < 1.
    """
    import torch

    if len(items) != len(prompts) or k < 1:
        raise ValueError(f"need one prompt per item and k >= 1 (items {len(items)}, prompts {len(prompts)}, k {k})")
    model.eval()
    prefix = tokenizer.encode(THINK_OPEN + "\n", add_special_tokens=False)
    close_ids = tokenizer.encode(THINK_CLOSE, add_special_tokens=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = eos_token_ids(model, tokenizer)
    out: list[list[Sample]] = []
    for b in range(0, len(items), batch_items):
        its = items[b: b + batch_items]
        ps = [p + prefix for p in prompts[b: b + batch_items]]
        ids, att = left_pad(ps, pad)
        torch.manual_seed(seed + b)
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=att, do_sample=True, temperature=temperature,
                                 top_p=1.0, max_new_tokens=think_tokens, num_return_sequences=k, pad_token_id=pad,
                                 eos_token_id=sorted(eos))
        comps = []
        for r in gen[:, ids.shape[1]:].tolist():
            cut = next((i for i, t in enumerate(r) if t in eos), len(r))
            comps.append(r[:cut])
        seqs, starts, ans_from = [], [], []
        for j, c in enumerate(comps):
            p = ps[j // k]
            seqs.append(p + c)
            starts.append(len(p))
            ans_from.append(len(p) + _answer_start(tokenizer, c, close_ids))
        stats = _answer_stats(model, seqs, starts, ans_from)
        for i, it in enumerate(its):
            fam = family(it)
            row = []
            for j in range(i * k, (i + 1) * k):
                text = THINK_OPEN + "\n" + tokenizer.decode(comps[j], skip_special_tokens=True)
                row.append(Sample(text=text, tokens=len(prefix) + len(comps[j]), score=fam.score(text, it),
                                  key=normalize_answer(fam.extract(text)), certainty=stats[j][0]))
            out.append(row)
        log(f"sampled {min(b + batch_items, len(items))}/{len(items)} items x {k}")
    return out


def trace_entropy(model, tokenizer, prompts: list[list[int]], texts: list[str]) -> list[float]:
    """Mean entropy (nats) over all generated tokens of think completions `texts` (from
    ``<think>``, the forced prefix left out): how unsure the policy stayed while reasoning."""
    prefix_n = len(tokenizer.encode(THINK_OPEN + "\n", add_special_tokens=False))
    seqs, starts = [], []
    for p, t in zip(prompts, texts):
        c = tokenizer.encode(t, add_special_tokens=False)
        seqs.append(p + c)
        starts.append(len(p) + prefix_n)
    return [h for _, h in _answer_stats(model, seqs, starts, starts)]


def _row(r, score: float, tokens: int, thought: bool = True) -> dict:
    return {"id": r.id, "bucket": r.bucket, "thought": thought, "score": score, "think_tokens": tokens,
            "answer_tokens": 0, "hidden_tokens": 0}


def scaling_rows(items: list[Item], records, samples: list[list[Sample]], greedy_entropy: list[float],
                 tau_vote: float, confidence: float = 0.95, tau_think: float = math.inf) -> dict[str, list[dict]]:
    """Rows of the voting modes (see the module docstring); K = 1 + samples per item; `items`,
    `records` (`evals.forced.ForcedRecord`), `samples` and `greedy_entropy` are in the same order.
    `tau_think` (nats) is the gate's draft-entropy threshold that ``adaptive`` builds on; the
    default ∞ leaves the model's own choice alone."""
    from evals.stats import decide

    k = 1 + len(samples[0]) if samples else 1
    rows: dict[str, list[dict]] = {f"vote@{k}": [], "adaptive": [], f"best-of-{k}": []}
    gate = decide(records, "gated", tau_think)  # the served gate's decision and hidden draft tokens
    for it, r, ss, h, g in zip(items, records, samples, greedy_entropy, gate):
        fam_key = normalize_answer(family(it).extract(r.think_text))
        keys = [fam_key] + [s.key for s in ss]
        scores = {fam_key: r.think_score, **{s.key: s.score for s in ss}}
        tokens = [r.think_tokens] + [s.tokens for s in ss]
        cert = [max((s.certainty for s in ss if s.key == fam_key), default=-1.0)] + [s.certainty for s in ss]
        best, _ = vote(keys, cert)
        rows[f"vote@{k}"].append(_row(r, scores[best], sum(tokens)))
        top = max(range(len(keys)), key=lambda i: cert[i])
        rows[f"best-of-{k}"].append(_row(r, scores[keys[top]], sum(tokens)))
        if not g["thought"]:  # the gate answers at once: no thinking, no voting
            rows["adaptive"].append(g)
        elif h <= tau_vote:  # certain after thinking: the one greedy answer
            rows["adaptive"].append({**_row(r, r.think_score, r.think_tokens), "hidden_tokens": g["hidden_tokens"]})
        else:
            res = adaptive_vote(keys, cert, max_samples=k, confidence=confidence)
            rows["adaptive"].append({**_row(r, scores[res.answer], sum(tokens[: res.used])),
                                     "hidden_tokens": g["hidden_tokens"]})
    return rows


def sweep(results: dict, taus: list[float], set_name: str = "arith", k: int = 8) -> list[dict]:
    """Re-read a ``--samples`` evaluation (results.json) at other `taus`: per bucket, the accuracy
    and mean tokens of always, gated (the gate alone, at the run's ``tau_used``), vote@K and adaptive,
    and adaptive's paired difference to always and to vote@K — how τ_vote is picked on the dev split.
    The stored records and samples go through `scaling_rows` again, so the modes are computed exactly
    as in the evaluation."""
    from evals.forced import ForcedRecord
    from evals.stats import decide, paired, summarize

    model = next(iter(results["models"].values()))
    tau_think = model.get("tau_used", math.inf)
    per_item = model["sets"][set_name]["samples"]
    recs = [ForcedRecord(**r) for r in model["records"][set_name]]
    items = [Item(r.id, r.family, "", "", r.bucket) for r in recs]
    samples = [[Sample("", tokens, score, key, cert) for key, score, tokens, cert in per_item[r.id]["samples"]]
               for r in recs]
    entropy = [per_item[r.id]["greedy"][0] for r in recs]
    out = []
    for tau in taus:
        for bucket in sorted({r.bucket for r in recs}):
            keep = [i for i, r in enumerate(recs) if r.bucket == bucket]
            pick = [recs[i] for i in keep]
            rows = {"always": decide(pick, "always"), "gated": decide(pick, "gated", tau_think),
                    **scaling_rows([items[i] for i in keep], pick, [samples[i] for i in keep],
                                   [entropy[i] for i in keep], tau, tau_think=tau_think)}
            s = {m: summarize(v) for m, v in rows.items() if m in ("always", "gated", f"vote@{k}", "adaptive")}
            out.append({"tau_vote": tau, "bucket": bucket, **{m: {"accuracy": v["accuracy"], "tokens": v["total_tokens"]}
                                                             for m, v in s.items()},
                        "adaptive_vs_always": paired(rows["adaptive"], rows["always"]),
                        f"adaptive_vs_vote@{k}": paired(rows["adaptive"], rows[f"vote@{k}"])})
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m evals.scaling RESULTS.json --tau 0.05,0.1,...``: print `sweep`."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m evals.scaling", description="re-read a --samples evaluation at other tau_vote")
    ap.add_argument("results")
    ap.add_argument("--tau", default="0,0.05,0.1,0.11,0.12,0.15,0.2")
    ap.add_argument("--set", default="arith", help="task set of the run (arith, arith-hard, arith-easy)")
    args = ap.parse_args(argv)
    for r in sweep(json.loads(open(args.results).read()), [float(t) for t in args.tau.split(",")], set_name=args.set):
        a, v = r["adaptive_vs_always"], r["adaptive_vs_vote@8"]
        print(f"tau {r['tau_vote']:.2f} {r['bucket']:4}: always {r['always']['accuracy']:.3f} ({r['always']['tokens']:.0f} tok) "
              f"gated {r['gated']['accuracy']:.3f} ({r['gated']['tokens']:.0f}) vote@8 {r['vote@8']['accuracy']:.3f} "
              f"({r['vote@8']['tokens']:.0f}) adaptive {r['adaptive']['accuracy']:.3f} ({r['adaptive']['tokens']:.0f} tok = "
              f"{r['adaptive']['tokens'] / r['vote@8']['tokens']:.0%} of vote@8, {r['adaptive']['tokens'] / r['gated']['tokens']:.2f}x "
              f"gated) | vs always {a['diff']:+.3f} [{a['ci_low']:+.3f}, {a['ci_high']:+.3f}] p {a['mcnemar_p']:.2g} | "
              f"vs vote@8 {v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]")


if __name__ == "__main__":
    main()
