"""Probe (dev split only, seed 2, hard): can the policy verify the arithmetic steps of its own
sampled traces (each line's claim re-asked as a direct question), and does choosing among samples
by that check beat greedy always-think?"""
import json, re, sys, pickle, os
from pathlib import Path
import torch
torch.set_num_threads(2)
from transformers import AutoModelForCausalLM, AutoTokenizer
from tasks import Item, render_prompt, family
from tasks.arithmetic import make_items
from evals.forced import _generate, _noop
from evals.scaling import sample_think
from policy.modes import ModeForcer
from policy.format import THINK_OPEN

N = int(sys.argv[1]) if len(sys.argv) > 1 else 150
path = "runs/grpo-arith-cpu"
tok = AutoTokenizer.from_pretrained(path); model = AutoModelForCausalLM.from_pretrained(path).eval()
items = make_items("hard", N, seed=2)
prompts = [tok.encode(render_prompt(tok, it), add_special_tokens=False) for it in items]
cache = os.path.expanduser("~/.cache/thinkgate/verify_feas_samples.pkl")  # resumable; not committed
if os.path.exists(cache):
    greedy, samples = pickle.load(open(cache, "rb"))
else:
    pre = tok.encode(THINK_OPEN + "\n", add_special_tokens=False)
    greedy = []
    for b in range(0, N, 32):
        for ids, _ in _generate(model, tok, [p + pre for p in prompts[b:b+32]], 128, _noop):
            greedy.append(THINK_OPEN + "\n" + tok.decode(ids, skip_special_tokens=True))
        print("greedy", len(greedy), flush=True)
    samples = sample_think(model, tok, items, prompts, k=7, temperature=0.4, log=lambda m: print(m, flush=True))
    samples = [[s.text for s in row] for row in samples]
    pickle.dump((greedy, samples), open(cache, "wb"))

NUM = r"-?\d+"
def claims(text):
    """(x, op, y, claimed) of every 'x op y = z' with non-negative x, y in the trace (the inner ops)."""
    body = text.split("</think>")[0]
    out = []
    for line in body.splitlines():
        parts = [p.strip() for p in line.split("=")]
        # consecutive pairs: expression = value
        for a, b in zip(parts, parts[1:]):
            m = re.fullmatch(r"-?\(?\s*(\d+)\s*([+-])\s*(\d+)\s*\)?", a)
            if not m: continue
            neg = a.startswith("-(")
            if a.startswith("-") and not neg: continue
            if not re.fullmatch(NUM, b):
                mb = re.fullmatch(r"-\(\s*(\d+)\s*([+-])\s*(\d+)\s*\)", b)
                continue
            v = int(b)
            out.append((int(m.group(1)), m.group(2), int(m.group(3)), -v if neg else v))
    return out

allc = sorted({c[:3] for t in greedy for c in claims(t)} | {c[:3] for row in samples for t in row for c in claims(t)})
print("distinct sub-questions", len(allc), flush=True)
sub = [Item(f"q{i}", "arith", f"What is {x} {op} {y}?", str(x + y if op == "+" else x - y), "easy", None)
       for i, (x, op, y) in enumerate(allc)]
sp = [tok.encode(render_prompt(tok, it), add_special_tokens=False) for it in sub]
ans = {}
for b in range(0, len(sub), 64):
    res = _generate(model, tok, sp[b:b+64], 8, ModeForcer(tok, [False] * len(sp[b:b+64])))
    for it, c, (ids, _) in zip(sub[b:b+64], allc[b:b+64], res):
        ans[c] = family(it).extract(tok.decode(ids, skip_special_tokens=True))
acc = sum(ans[c] == str(c[0] + c[2] if c[1] == "+" else c[0] - c[2]) for c in allc) / len(allc)
print("policy direct accuracy on the sub-questions", round(acc, 3), flush=True)

def bad(text):
    return sum(1 for x, op, y, v in claims(text) if ans[(x, op, y)] != str(v))

fam = family(items[0])
from collections import Counter
res = Counter()
flag = Counter()
for it, g, row in zip(items, greedy, samples):
    cands = [g] + row
    sc = [fam.score(t, it) for t in cands]
    bads = [bad(t) for t in cands]
    keys = [fam.extract(t) for t in cands]
    res["greedy"] += sc[0]
    maj = Counter(keys).most_common(1)[0][0]
    res["vote8"] += float(maj == it.answer)
    m = min(bads)
    pool = [k for k, b in zip(keys, bads) if b == m]
    top = Counter(pool).most_common()
    pick = next(k for k in keys if k in {t for t, c in top if c == top[0][1]})  # ties: earliest (greedy first)
    res["verified_vote8"] += float(pick == it.answer)
    pool_w = Counter()
    for k, b in zip(keys, bads): pool_w[k] += 1.0 / (1 + b)
    res["weighted_vote8"] += float(pool_w.most_common(1)[0][0] == it.answer)
    res["pass8"] += float(max(sc))
    flag[(sc[0] == 1.0, bads[0] == 0)] += 1
print({k: round(v / N, 3) for k, v in res.items()})
print("greedy (right?, verified?) counts", dict(flag))
