"""tasks.numeric: disjoint split seeds, the served prompt, number extraction and the scorer."""
import pytest

pytest.importorskip("reasoning_gym")

from tasks import family, load_items, render_prompt  # noqa: E402
from tasks.numeric import FAMILY  # noqa: E402


@pytest.mark.parametrize("name", ["gsm", "multidigit", "onestep"])
def test_splits_are_disjoint_and_items_score_their_own_answer(name):
    dev, test = load_items(name, 30, 2), load_items(name, 30, 3)
    assert len({i.question for i in test}) == 30
    shared = {i.question for i in dev} & {i.question for i in test}
    if name == "onestep":  # a small space (two 1–2-digit numbers): splits overlap, as chain sums' easy table
        assert len(shared) < 10
    else:
        assert not shared
    assert load_items(name, 30, 3)[5].question == test[5].question  # reproducible
    for it in test[:5]:
        assert family(it) is FAMILY
        assert FAMILY.score(f" {it.answer}", it) == 1.0
        assert FAMILY.score(f"<think>\nlet me see\n</think>\nThe answer is {it.answer}.", it) == 1.0
        assert FAMILY.score(" 1234567.5", it) == 0.0
    assert {i.bucket for i in test} == ({"easy"} if name == "onestep" else {"hard"})


def test_multidigit_operands_have_at_most_4_digits_and_one_of_3_or_more():
    import re

    for it in load_items("multidigit", 20, 3):
        nums = re.findall(r"\d+", it.question)
        assert 2 <= len(nums) <= 3 and max(map(len, nums)) >= 3 and all(len(n) <= 4 for n in nums), it.question
        assert it.answer.lstrip("-").isdigit()


def test_multidigit_answers_follow_the_usual_precedence():
    """reasoning-gym's answer of ``a + b * c`` is (a + b) * c; the item's reference is a + b * c."""
    from tasks.numeric import evaluate

    items = load_items("multidigit", 150, 3)
    for it in items:
        expr = it.question.removeprefix("Calculate ").rstrip(".")
        assert it.answer == str(evaluate(expr)), it.question
    fixed = [it for it in items if "rg_answer" in it.meta]
    assert len(fixed) == 15  # test split: 15 of 150 had a left-to-right reference
    it = fixed[0]
    assert FAMILY.score(f" {it.answer}", it) == 1.0 and FAMILY.score(f" {it.meta['rg_answer']}", it) == 0.0
    with pytest.raises(ValueError, match="not an integer"):
        evaluate("__import__('os')")


def test_extraction_reads_the_first_sentence_of_the_answer():
    it = load_items("onestep", 1, 3)[0]
    assert FAMILY.extract(" 279 insects. Half of 186 is 93.") == "279"
    assert FAMILY.extract(" 8631 - 522 = 8109") == "8109"
    assert FAMILY.extract("<think>\n5 + 5 = 10\n</think>\n \\boxed{1,024}") == "1024"
    assert FAMILY.extract(" no idea") == "" and FAMILY.score(" no idea", it) == 0.0


class _Tok:
    def apply_chat_template(self, msgs, tokenize=False, add_generation_prompt=True):
        return "|".join(f"{m['role']}:{m['content']}" for m in msgs)


def test_served_prompt_has_no_passages_and_the_system_prompt():
    from tasks.prompt import SYSTEM_PROMPT

    it = load_items("gsm", 1, 3)[0]
    assert render_prompt(_Tok(), it) == f"system:{SYSTEM_PROMPT}|user:{it.question}"
