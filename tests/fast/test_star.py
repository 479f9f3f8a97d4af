"""STaR think targets (issue 27, `training.star`): the batched think-then-answer pass on a tiny random
Qwen2, the file's rows read back as dual-mode training rows, and the refusals."""
import json

import pytest

from tasks import Item
from training.star import hint_messages, solve, star_rows


def test_solve_thinks_then_answers_after_the_served_opening():
    from tests.helpers import byte_bpe_tokenizer, tiny_qwen2

    tok = byte_bpe_tokenizer()
    model = tiny_qwen2(len(tok))
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>")]
    prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                  add_generation_prompt=True), add_special_tokens=False)
               for q in ("hello", "the answer is 42 python lists", "world")]
    rows = solve(model, tok, prompts, "Answer:", think_tokens=6, answer_tokens=3, batch_size=2)
    assert len(rows) == 3
    for r in rows:
        assert r["text"].startswith("<think>\n") and "\n</think>\nAnswer:" in r["text"]
        assert r["trace_tokens"] <= 6 and isinstance(r["ended"], bool)
        assert r["text"].endswith("Answer:" + r["answer"])
    again = solve(model, tok, prompts[:1], "Answer:", think_tokens=6, answer_tokens=3, batch_size=2)
    assert again[0]["reasoning"] == solve(model, tok, prompts[:1], "Answer:", 6, 3, 1)[0]["reasoning"]


def test_hint_is_added_to_the_last_user_message_only():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "Calculate 2 + 3."}]
    out = hint_messages(msgs, "5")
    assert out[0] == msgs[0] and "correct answer is 5" in out[1]["content"] and msgs[1]["content"] == "Calculate 2 + 3."


def test_star_file_rows_become_dual_mode_rows_with_the_policys_own_trace(tmp_path):
    from tests.helpers import byte_bpe_tokenizer
    from training.dual import dual_mode_rows

    it = Item("onestep-s1-0", "numeric", "Calculate 2 + 3.", "5", "easy", "programmatic trace", meta={"set": "onestep"})
    path = tmp_path / "star.jsonl"
    path.write_text(json.dumps({"id": it.id, "set": "onestep", "kept": True, "trace": "2 + 3 = 5.", "source": "self",
                                "item": it.to_dict()}) + "\n"
                    + json.dumps({"id": "onestep-s1-1", "set": "onestep", "kept": False}) + "\n")
    kept = star_rows(path)
    assert [(i.id, i.trace, src) for i, src in kept] == [("onestep-s1-0", "2 + 3 = 5.", "self")]
    rows = dual_mode_rows([i for i, _ in kept], byte_bpe_tokenizer())
    assert [r["completion"] for r in rows] == ["<think>\n2 + 3 = 5.\n</think>\n5", "5"]
    assert rows[0]["prompt"] == rows[1]["prompt"] and rows[0]["prompt"].endswith("<|im_start|>assistant\n")


def test_held_out_families_and_missing_files_are_refused(tmp_path):
    from training.sft import SFTScriptArguments
    from training.star import main

    with pytest.raises(SystemExit, match="held out of training"):
        main(["--sets", "gsm", "letters", "--out", str(tmp_path / "x.jsonl")])
    with pytest.raises(ValueError, match="star_file must be an existing STaR file"):
        SFTScriptArguments(star_file=str(tmp_path / "missing.jsonl"))


def test_reference_rows_hold_the_tasks_rationales_and_resume(tmp_path):
    """--reference: each training item's reference rationale (long multiplication for multi-digit, GSM's
    answer_cot without its '#### n' line) as the think target; a re-run writes nothing twice."""
    pytest.importorskip("reasoning_gym")
    from tasks.numeric import arithmetic_trace, evaluate
    from tests.helpers import byte_bpe_tokenizer
    from training.star import write_reference_rows

    out = tmp_path / "ref.jsonl"
    assert write_reference_rows(["multidigit", "gsm"], 3, out, byte_bpe_tokenizer()) == 6
    assert write_reference_rows(["multidigit", "gsm"], 4, out, byte_bpe_tokenizer()) == 2  # only the new ones
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == 8 and {r["source"] for r in rows} == {"reference"}
    for r in rows:
        assert r["trace_tokens"] > 0 and "####" not in r["trace"]
        if r["set"] == "multidigit":
            assert r["trace"].endswith(f"So the value is {r['answer']}.")
    assert [i.trace for i, _ in star_rows(out)] == [r["trace"] for r in rows]
    trace = arithmetic_trace("7 + 1234 * 567")  # × first, by place value, then the sum
    assert trace.splitlines()[1] == "1234 * 567 = 1234 * 500 + 1234 * 60 + 1234 * 7 = 617000 + 74040 + 8638"
    assert trace.endswith(f"So the value is {evaluate('7 + 1234 * 567')}.")
    with pytest.raises(ValueError, match="not a flat"):
        arithmetic_trace("(1 + 2) * 3")
