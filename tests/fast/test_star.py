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
