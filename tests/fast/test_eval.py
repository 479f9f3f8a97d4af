"""Evaluation maths (modes, intervals, paired tests, AUROC, calibration) and the forced-mode runner."""
import math

import pytest

from evals.forced import ForcedRecord, run_forced
from evals.stats import (auroc, calibrate, decide, item_tokens, paired, share_upper_bound, summarize, tau_grid,
                         two_proportions, wilson)


def rec(i, bucket, direct, think, ent, learned=False, p=0.1):
    return ForcedRecord(id=str(i), family="arith", bucket=bucket, p_think=p, learned_think=learned,
                        draft_entropy=ent, draft_tokens=4, direct_text="1", direct_tokens=3, direct_score=direct,
                        think_text="<think>\nx\n</think>\n1", think_tokens=30, think_score=think)


RECS = [rec(0, "easy", 1, 1, 0.2), rec(1, "easy", 1, 1, 0.5), rec(2, "hard", 0, 1, 2.5, learned=True, p=0.9),
        rec(3, "hard", 0, 1, 3.0), rec(4, "hard", 0, 0, 2.8, learned=True, p=0.8)]


def test_modes_derived_from_paired_records():
    assert [r["thought"] for r in decide(RECS, "never")] == [False] * 5
    assert [r["thought"] for r in decide(RECS, "learned")] == [False, False, True, False, True]
    gated = decide(RECS, "gated", tau=2.9)  # model's choice or entropy > 2.9
    assert [r["thought"] for r in gated] == [False, False, True, True, True]
    assert gated[3]["hidden_tokens"] == 4 and gated[2]["hidden_tokens"] == 0  # discarded draft counted
    assert [r["thought"] for r in decide(RECS, "entropy", tau=1.0)] == [False, False, True, True, True]
    assert [r["thought"] for r in decide(RECS, "oracle")] == [False, False, True, True, False]
    s = summarize(decide(RECS, "oracle"))
    assert s["accuracy"] == 0.8 and s["think_rate"] == 0.4 and s["ci_low"] < 0.8 < s["ci_high"]
    with pytest.raises(ValueError, match="mode must be one of"):
        decide(RECS, "sometimes")


def test_wilson_paired_mcnemar_auroc():
    lo, hi = wilson(0, 150)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.02 < hi < 0.03
    a = [{"id": str(i), "score": 1.0} for i in range(30)]
    b = [{"id": str(i), "score": float(i < 10)} for i in range(30)]
    p = paired(a, b)
    assert p["diff"] == pytest.approx(20 / 30) and p["a_only"] == 20 and p["b_only"] == 0
    assert p["mcnemar_p"] < 1e-5 and p["ci_low"] > 0.4
    with pytest.raises(ValueError, match="same items"):
        paired(a, b[::-1])
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2], [True, True]) is None


def test_calibration_picks_the_cheapest_tau_that_keeps_accuracy():
    cal = calibrate(RECS, cost_per_100=0.01, mode="entropy")
    assert 0.5 <= cal["tau_think"] < 2.5  # thinks on the hard items only
    assert cal["dev"]["accuracy"] == pytest.approx(0.8)
    assert calibrate(RECS, cost_per_100=100.0, mode="entropy")["dev"]["think_rate"] == 0.0
    assert tau_grid(RECS)[0] == 0.0 and tau_grid(RECS)[-1] > 3.0


def test_calibration_within_a_token_budget():
    """Thinking on all three hard items costs (3·30 + 2·3) / 5 = 19.2 tokens, 64 % of always-think's 30:
    a 50 % budget allows two thoughts, and the most accurate τ inside it thinks on the least certain
    item only (the second, 2.8 nats, does not help; ties go to the larger τ)."""
    free = calibrate(RECS, cost_per_100=0.0, mode="entropy")
    assert free["dev"]["accuracy"] == pytest.approx(0.8)
    cal = calibrate(RECS, cost_per_100=0.0, mode="entropy", max_token_share=0.5)
    assert 2.8 <= cal["tau_think"] < 3.0 and cal["max_token_share"] == 0.5
    assert cal["dev"]["accuracy"] == pytest.approx(0.6) and cal["dev"]["think_rate"] == pytest.approx(0.2)
    assert calibrate(RECS, 0.0, "entropy", max_token_share=0.01)["dev"]["think_rate"] == 0.0  # only never fits
    with pytest.raises(ValueError, match="max_token_share"):
        calibrate(RECS, 0.0, "entropy", max_token_share=1.5)


def test_token_budget_at_a_confidence():
    """On 5 dev items one thought (item 3: 30 + 4 draft tokens) is 31 % of always-think's tokens, inside a
    50 % budget; but a resample that draws item 3 twice (probability 0.26) is at 51 %, so the budget does
    not hold at 95 % confidence and only never-think (10 %) is left."""
    point = calibrate(RECS, 0.0, "entropy", max_token_share=0.5)
    assert point["dev"]["think_rate"] == pytest.approx(0.2) and point["share_upper_bound_dev"] is None
    sure = calibrate(RECS, 0.0, "entropy", max_token_share=0.5, share_confidence=0.95)
    assert sure["dev"]["think_rate"] == 0.0 and sure["share_upper_bound_dev"] == pytest.approx(0.1)
    assert sure["share_confidence"] == 0.95
    many = RECS * 40  # the same pattern on 200 items: the bound tightens towards the point estimate
    tokens = item_tokens(decide(many, "entropy", 2.9))
    always = item_tokens(decide(many, "always"))
    share = sum(tokens) / sum(always)
    bound = share_upper_bound(tokens, always, 0.95)
    assert share < bound < 0.5 and bound == share_upper_bound(tokens, always, 0.95)  # seeded: reproducible
    assert calibrate(many, 0.0, "entropy", max_token_share=0.5, share_confidence=0.95)["dev"]["think_rate"] > 0
    with pytest.raises(ValueError, match="share_confidence"):
        calibrate(RECS, 0.0, "entropy", share_confidence=0.95)  # a confidence needs a budget
    with pytest.raises(ValueError, match="confidence must be in"):
        share_upper_bound(tokens, always, 1.0)


def test_run_forced_on_a_tiny_model_pairs_both_modes():
    from tasks.arithmetic import make_items
    from tasks import prompt_ids
    from tests.helpers import byte_bpe_tokenizer, tiny_llama

    tok = byte_bpe_tokenizer()
    model = tiny_llama(len(tok))
    items = make_items("easy", 3, 3) + make_items("hard", 2, 3)
    prompts = [prompt_ids(tok, it) for it in items]
    recs = run_forced(model, tok, items, prompts, think_tokens=6, answer_tokens=5, draft_tokens=4, batch_size=2)
    assert [r.id for r in recs] == [it.id for it in items]
    for r in recs:
        assert r.think_text.startswith("<think>\n") and not r.direct_text.startswith("<")
        assert 0.0 <= r.p_think <= 1.0 and r.draft_entropy > 0 and not math.isnan(r.draft_entropy)
        assert 1 <= r.draft_tokens <= 4 and r.direct_score in (0.0, 1.0)


def test_mode_forcer_forces_the_first_token_and_keeps_no_think_rows_from_any_angle_bracket():
    import torch

    from policy.modes import ModeForcer, angle_token_ids, think_sequences
    from tests.helpers import byte_bpe_tokenizer

    tok = byte_bpe_tokenizer()
    think_id = think_sequences(tok)[0][0]
    angle = angle_token_ids(tok)
    assert think_id in angle and all("<" in tok.decode([i]) for i in angle)
    assert tok.eos_token_id not in angle  # "<|im_end|>" must stay allowed: a direct answer has to end
    f = ModeForcer(tok, [True, False])
    prompt = torch.zeros((2, 3), dtype=torch.long)
    first = f(prompt, torch.zeros((2, len(tok))))
    assert first[0].argmax() == think_id and torch.isinf(first[0]).sum() == len(tok) - 1
    assert torch.isinf(first[1, angle]).all() and torch.isinf(first[1]).sum() == len(angle)
    later = f(torch.zeros((2, 5), dtype=torch.long), torch.zeros((2, len(tok))))
    assert not torch.isinf(later[0]).any() and torch.isinf(later[1, angle]).all()


def test_thresholds_record_their_backend_and_a_mismatch_warns(tmp_path, caplog):
    """thinkgate.json written by calibration names the engine and weights its entropies came
    from; serving on another (quantized) one logs a warning, the same one stays silent."""
    import json
    import logging

    from agent.config import AgentConfig, calibration_mismatch

    assert calibration_mismatch(tmp_path, "onnx", "int8") is None  # nothing calibrated: agent defaults
    (tmp_path / "thinkgate.json").write_text(json.dumps(
        {"tau_think": 0.7, "calibrated": {"backend": "transformers", "weights": "fp32", "n": 150}}))
    assert AgentConfig.for_model(tmp_path).tau_think == 0.7
    assert calibration_mismatch(tmp_path, "transformers", "fp32") is None
    with caplog.at_level(logging.WARNING, logger="thinkgate.agent"):
        msg = calibration_mismatch(tmp_path, "onnx", "int8")
    assert "backend=transformers weights=fp32" in msg and "backend=onnx weights=int8" in msg
    assert any("re-calibrate" in r.message for r in caplog.records)


def test_two_proportions_interval_and_errors():
    r = two_proportions(30, 150, 30, 150)
    assert r["diff"] == 0 and r["ci_low"] < 0 < r["ci_high"] and r["fisher_p"] == pytest.approx(1.0)
    r = two_proportions(150, 150, 0, 150)  # the Newcombe interval stays inside [-1, 1]
    assert r["diff"] == 1 and 0.9 < r["ci_low"] < 1 and r["ci_high"] <= 1
    with pytest.raises(ValueError, match="0 <= k <= n"):
        two_proportions(5, 4, 1, 4)


def test_think_rate_by_entropy_compares_hard_and_easy_ntr_positions():
    from evals.modes import think_rate_by_entropy

    def ntr(i, ent, learned, draft_ent):
        r = rec(i, "hard" if ent >= 2.0 else "easy", 0, 0, draft_ent, learned=learned, p=0.9 if learned else 0.1)
        r.meta = {"entropy": ent}
        return r

    recs = [ntr(i, 3.0 + i / 10, i % 4 != 0, 0.5) for i in range(20)] + [ntr(20 + i, 0.5, i % 4 == 0, 2.5) for i in range(20)]
    out = think_rate_by_entropy(recs, tau=2.0)
    assert out["n_hard"] == 20 and out["n_easy"] == 20
    assert out["learned"]["rate_a"] == 0.75 and out["learned"]["rate_b"] == 0.25 and out["learned"]["fisher_p"] < 0.01
    assert out["gated"]["rate_b"] == 1.0  # every easy draft is above τ: the gate thinks there
    assert out["spearman_p_think"]["rho"] > 0.4 and out["spearman_draft_entropy"]["rho"] < 0
    assert think_rate_by_entropy([rec(0, "hard", 0, 0, 1.0)], tau=2.0) is None  # no position entropies


def test_quality_report_states_the_difficulty_ceiling(tmp_path, capsys):
    """evals.quality report: the gate's AUROC against 'helped' beside hard-vs-easy, wrong-direct and the
    ceiling of a perfect difficulty signal, which is 0.5 when thinking helps easy and hard items alike."""
    import json

    from evals.quality import main as quality_main

    def row(i, s, bucket, direct, think, ent):
        return {"id": f"{s}-{i}", "family": "numeric", "bucket": bucket, "p_think": 0.0, "learned_think": False,
                "draft_entropy": ent, "draft_tokens": 2, "direct_text": "1", "direct_tokens": 2,
                "direct_score": direct, "think_text": "<think>\nx\n</think>\n1", "think_tokens": 40,
                "think_score": think, "meta": {"set": s, "answer": "1", "draft_entropies": [ent, ent]}}

    d = tmp_path / "m"
    d.mkdir()
    # hard: direct always wrong, thinking fixes 2 of 4; easy: thinking fixes 2 of 4 and breaks 1
    hard = [row(i, "gsm", "hard", 0, int(i < 2), 2.0 + i / 10) for i in range(4)]
    easy = [row(i, "onestep", "easy", int(i >= 2), int(i != 3), 0.1 + i / 10) for i in range(4)]
    for name, rows in (("test-gsm", hard), ("test-onestep", easy)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    quality_main(["report", "--model", "m", "--sets", "gsm", "onestep", "--mix", "gsm", "onestep", "--out", str(tmp_path)])
    res = json.loads((d / "report.json").read_text())["mix"]
    c = res["auroc_companions_test"]
    assert res["helped_test"] == 4 and res["hurt_test"] == 1
    assert c["hard_vs_easy"] == 1.0 and c["direct_wrong"] == pytest.approx(8 / 12)
    assert c["difficulty_ceiling"] == 0.5  # helped twice in each bucket: no difficulty score can rank it
    # a perfect verifier of the direct answer ties the helped items with the wrong ones thinking cannot fix
    assert c["wrong_direct_ceiling"] == pytest.approx(0.75)
    assert "ceiling" in capsys.readouterr().out
    # with dev rows, τ is calibrated and written into thinkgate.json: settings already there (the
    # reasoning budget the rows were measured at) stay, and the comment names how τ was chosen
    for name, rows in (("dev-gsm", hard), ("dev-onestep", easy)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cal = tmp_path / "thinkgate.json"
    cal.write_text(json.dumps({"max_think_tokens": 512, "max_steps": 8, "_comment": "stale"}))
    quality_main(["report", "--model", "m", "--sets", "gsm", "--mix", "gsm", "onestep", "--cost-per-100", "0",
                  "--max-token-share", "0.6", "--write-calibration", str(cal), "--out", str(tmp_path)])
    written = json.loads(cal.read_text())
    assert written["max_think_tokens"] == 512 and written["max_steps"] == 8 and written["answer_prefix"] == "Answer:"
    chosen = json.loads((d / "report.json").read_text())["mix"]["calibration"]["tau_think"]
    assert written["calibrated"]["n_dev"] == 8 and written["tau_think"] == chosen
    assert "--max-token-share 0.6" in written["_comment"] and "max_think_tokens 512" in written["_comment"]
    # the second held-out split gets its own report; the test split's report is left as it was
    before = (d / "report.md").read_text()
    for name, rows in (("test2-gsm", hard), ("test2-onestep", easy)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    quality_main(["report", "--model", "m", "--sets", "gsm", "--mix", "gsm", "onestep", "--cost-per-100", "0",
                  "--max-token-share", "0.6", "--share-confidence", "0.95", "--test-split", "test2",
                  "--out", str(tmp_path)])
    assert (d / "report.md").read_text() == before
    second = json.loads((d / "report-test2.json").read_text())["mix"]
    assert second["calibration"]["share_confidence"] == 0.95 and second["n_test"] == 8
    assert "mode (test2)" in (d / "report-test2.md").read_text()
    # the side-by-side table reads the split it is given (dev for a warm-up's go/no-go)
    capsys.readouterr()
    quality_main(["table", "--models", "m", "--sets", "gsm", "onestep", "--split", "dev", "--out", str(tmp_path)])
    table = capsys.readouterr().out
    assert "| gsm | m | 4 | 0.000" in table and "| onestep | m | 4 | 0.500" in table
