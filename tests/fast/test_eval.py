import json

import pytest

from agent.eval import calibrate, objective, percentile, simulate_gate, summarize, tau_grid, write_outputs
from agent.tasks import docs_tasks, extract_answer, ntr_tasks


def row(task, mode, score, draft, think=0, answer=10, hidden=0, thought=False, hard=None):
    return {"task": task, "mode": mode, "score": score, "support": None, "think_tokens": think,
            "answer_tokens": answer, "hidden_tokens": hidden, "total_tokens": think + answer + hidden,
            "thought": thought, "draft_score": draft, "draft_tokens": 8, "retrievals": 0, "latency": 1.0,
            "meta": {"hard": hard}, "answer": ""}


NEVER = [row("a", "never", 1, 0.2), row("b", "never", 0, 2.5), row("c", "never", 1, 0.4), row("d", "never", 0, 3.0)]
ALWAYS = [row(t, "always", s, None, think=100, thought=True) for t, s in zip("abcd", (1, 1, 0, 1))]


def test_simulated_gate_takes_never_below_tau_and_always_above():
    sim = simulate_gate(NEVER, ALWAYS, 1.0)
    assert [r["thought"] for r in sim] == [False, True, False, True]
    assert [r["score"] for r in sim] == [1, 1, 1, 1]  # the best of both here
    assert sim[1]["total_tokens"] == 110 + 8  # thinking path pays the discarded draft
    s = summarize(sim)
    assert s["accuracy"] == 1.0 and s["think_rate"] == 0.5
    assert summarize(simulate_gate(NEVER, ALWAYS, 10.0))["think_rate"] == 0.0
    assert summarize(simulate_gate(NEVER, ALWAYS, -1))["accuracy"] == 0.75


def test_tau_grid_and_objective_and_calibration():
    grid = tau_grid(NEVER)
    assert grid[0] == 0.0 and grid[-1] > 3.0 and len(grid) == 6
    assert objective(NEVER, 0.0) == 0.5 and objective(NEVER, 1.0) == pytest.approx(0.5 - 0.1)
    rows = {"set": {"never": NEVER * 2, "always": ALWAYS * 2}}
    cal = calibrate(rows, cost=0.01)
    assert 0.4 <= cal["tau_think"] < 2.5  # think on b and d only
    assert cal["test"]["accuracy"] == 1.0 and cal["test"]["think_rate"] == 0.5
    expensive = calibrate(rows, cost=10.0)
    assert expensive["test"]["think_rate"] == 0.0  # thinking never pays at that price


def test_summary_latency_and_hard_easy():
    rows = [row("a", "m", 1, 0.1, thought=True, hard=True), row("b", "m", 0, 0.1, hard=False)]
    s = summarize(rows)
    assert s["think_rate_hard"] == 1.0 and s["think_rate_easy"] == 0.0
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 95) == 0.0


def test_outputs(tmp_path):
    res = {"summary": {"m": {"set": {"never": summarize(NEVER), "always": summarize(ALWAYS)}}},
           "sweeps": {"m": {"set": [dict(summarize(simulate_gate(NEVER, ALWAYS, t)), tau=t) for t in tau_grid(NEVER)]}}}
    write_outputs(tmp_path, res)
    table = (tmp_path / "table.md").read_text()
    assert "| m | set | never | 4 | 0.500 |" in table
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["m"]["set"]["always"]["accuracy"] == 0.75


def test_task_scorers(tmp_path):
    assert extract_answer(r"I think \boxed{ -3 }") == "-3" and extract_answer("1,234 then 5") == "5"
    docs = docs_tasks()
    assert len(docs) == 20 and all(t.retrieval for t in docs)
    len_task = next(t for t in docs if t.id == "docs-len")
    assert len_task.score("It returns the length of an object.", {}) == 1.0
    assert len_task.score("It returns a list.", {}) == 0.0
    re_task = next(t for t in docs if t.id == "docs-regex-module")
    assert re_task.score("Use the re module.", {}) == 1.0 and re_task.score("Use regular expressions", {}) == 0.0
    f = tmp_path / "ntr.jsonl"
    f.write_text(json.dumps({"prompt": [{"role": "user", "content": "the"}], "context": "the", "continuation": " cat sat",
                             "boundaries": [4, 8], "hard": True}) + "\n")
    (t,) = ntr_tasks(f)
    assert t.score(r"\boxed{ cat}", {}) == 1.0 and t.score(r"\boxed{ ca}", {}) == 0.0 and not t.retrieval
