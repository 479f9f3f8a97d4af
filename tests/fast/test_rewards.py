import doctest

import pytest

import training.rewards as R
from tasks.ntr import boundaries
from training.ntr import ScoredPosition, build_ntr_rows
from training.config import ScriptArguments


def test_docstring_examples_pass():
    res = doctest.testmod(R)
    assert res.attempted >= 13 and res.failed == 0


CONT, BND = " the cat", [4, 8]


@pytest.mark.parametrize("completion,expected", [
    (r"\boxed{ the}", 1.0),                      # exact single token
    (r"\boxed{ the cat}", 1.0),                  # two tokens
    (r"\boxed{ th}", 0.0),                       # partial token
    (r"\boxed{the}", 0.0),                       # leading space missing
    (r"\boxed{ the ca}", 0.0),                   # ends inside the second token
    ("the", 0.0),                                # no box
    (r"\boxed{ dog} then \boxed{ the}", 1.0),    # several boxes: last wins
    (r"\boxed{ the} then \boxed{ dog}", 0.0),
    (r"<think>maybe \boxed{ dog}</think>\boxed{ the}", 1.0),  # the answer part counts
    (r"\boxed{}", 0.0),
])
def test_prefix_match_cases(completion, expected):
    assert R.prefix_match([completion], continuation=[CONT], boundaries=[BND]) == [expected]


def test_prefix_match_non_ascii_and_chat_messages():
    # "ñu" tokenised as ["ñ", "u"]: boundaries after 2 bytes and 3 bytes
    assert R.prefix_match([[{"role": "assistant", "content": r"\boxed{ñ}"}]], continuation=["ñu"],
                          boundaries=[[2, 3]]) == [1.0]
    assert R.prefix_match([r"\boxed{ñu}"], continuation=["ñu"], boundaries=[[3]]) == [1.0]
    assert R.prefix_match_score("\u00f1", "\u00f1u", [3]) == 0.0  # 2 bytes is not a boundary there


def test_correct_think_length_charges_only_right_answers():
    import json

    from tasks import Item

    it = json.dumps(Item("a", "arith", "What is 2 + 3?", "5", "easy", "2 + 3 = 5").to_dict())
    think = "<think>" + "x " * 50 + "</think>"
    right, wrong, at_once = think + "5", think + "6", "6"
    assert R.correct_think_length([right, wrong, at_once], item=[it] * 3, think_budget=100) == [-0.5, 0.0, 0.0]
    # a group where every rollout is wrong: no length signal (the unconditional penalty ranks at-once first)
    assert set(R.correct_think_length([wrong, at_once], item=[it] * 2, think_budget=100)) == {0.0}
    assert R.think_length([wrong, at_once], think_budget=100) == [-0.5, 0.0]


def test_think_length_no_think_bonus_soft_overlong_format():
    long_think = "<think>" + "x " * 200 + "</think>\\boxed{ the}"
    assert R.think_length([long_think], think_budget=100) == [-1.0]
    assert R.think_length([long_think], completion_ids=[[0] * 40], think_budget=100)[0] == pytest.approx(-0.37)  # 40 ids × 400/427 of the text
    kw = dict(continuation=[CONT] * 3, boundaries=[BND] * 3)
    assert R.no_think_bonus([r"\boxed{ the}", long_think, r"\boxed{ dog}"], no_think_delta=0.3, **kw) == [0.3, 0.0, 0.0]
    import json
    from tasks import Item

    it = json.dumps(Item("a", "arith", "What is 2 + 2?", "4", "easy", "2 + 2 = 4").to_dict())
    assert R.no_think_bonus(["4", "<think>\n2 + 2 = 4\n</think>\n4", "5"], item=[it] * 3, no_think_delta=1.0) == [1.0, 0.0, 0.0]
    assert R.soft_overlong(["a"] * 3, completion_ids=[[0] * 24, [0] * 30, [0] * 33],
                           max_completion_length=32, overlong_buffer=8) == [0.0, -0.75, -1.0]
    assert R.soft_overlong(["a"]) == [None]
    assert R.format_reward(["<think>a</think>", "<think>a</think><think>b</think>x", "x"]) == [0.0, 0.0, 1.0]


def test_correct_and_registry():
    import json
    from tasks import Item

    it = json.dumps(Item("a", "arith", "What is 40 + 2?", "42", "easy", "40 + 2 = 42").to_dict())
    assert R.correct(["The answer is 42.", "<think>\n40 + 2 = 42\n</think>\n42", "41"], item=[it] * 3) == [1.0, 1.0, 0.0]
    assert R.correct(["x"]) == [None]
    # each function receives only the parameters it names
    f, = R.get_reward_funcs(["no_think_bonus"], no_think_delta=0.25, think_budget=7)
    assert f.keywords == {"no_think_delta": 0.25}
    fs = R.get_reward_funcs(["prefix_match", "format"])
    assert [f.__name__ for f in fs] == ["prefix_match", "format"]
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        R.get_reward_funcs(["nope"])
    assert set(R.REWARDS) >= {"prefix_match", "think_length", "no_think_bonus", "soft_overlong", "format", "correct"}


def test_rewards_take_only_what_they_name():
    """No registered reward swallows unknown arguments; the bound ones take TRL's full call."""
    for name, fn in R.REWARDS.items():
        assert not R.named_parameters(fn)[1], f"{name} takes **kwargs"
    with pytest.raises(TypeError):
        R.REWARDS["format"](["x"], trainer_state=None)
    trl_call = {"prompts": ["p"], "completion_ids": [[1, 2]], "trainer_state": object(), "log_metric": print,
                "continuation": [" the"], "boundaries": [[4]], "hard": [True], "source": ["docs"]}
    fmt, bonus, overlong = R.get_reward_funcs(["format", "no_think_bonus", "soft_overlong"], no_think_delta=0.5,
                                              max_completion_length=4, overlong_buffer=1, think_budget=9)
    assert fmt([r"\boxed{ the}"], **trl_call) == [1.0]
    assert bonus([r"\boxed{ the}"], **trl_call) == [0.5]
    assert overlong([r"\boxed{ the}"], **trl_call) == [0.0]
    assert overlong.keywords == {"max_completion_length": 4, "overlong_buffer": 1}


def test_ntr_boundaries_and_selection():
    from tests.helpers import byte_bpe_tokenizer

    tok = byte_bpe_tokenizer()
    ids = tok("hello world, the answer is 42", add_special_tokens=False)["input_ids"]
    text, bnd = boundaries(tok, ids[:4])
    assert text.encode()[: bnd[-1]] == text.encode() and bnd == sorted(bnd) and len(bnd) >= 1
    for b in bnd:  # every boundary is where a token prefix ends
        assert any(tok.decode(ids[:j]).encode() == text.encode()[:b] for j in range(1, 5))
    scored = [ScoredPosition(0, t, e) for t, e in zip(range(2, len(ids)), [3.0, 0.1, 2.5, 0.2, 0.3, 2.1, 0.1, 0.1])]
    rows = build_ntr_rows(tok, [ids], scored, n=4, entropy_threshold=2.0, easy_share=0.25, seed=1)
    assert len(rows) == 4 and sorted(r["entropy"] for r in rows if r["hard"]) == [2.5, 3.0]  # both hard ones, 2 easy
    assert all("\\boxed{}" in r["prompt"][0]["content"] and r["prompt"][-1]["content"] == r["context"] for r in rows)
    again = build_ntr_rows(tok, [ids], scored, n=4, entropy_threshold=2.0, easy_share=0.25, seed=1)
    assert rows == again  # reproducible from the seed


def test_script_arguments_validation():
    with pytest.raises(ValueError, match="task must be 'ntr', 'arith', 'hops' or 'mix', got 'x'"):
        ScriptArguments(task="x")
    with pytest.raises(ValueError, match="easy_share must be in \\[0, 1\\], got 2"):
        ScriptArguments(easy_share=2)
    with pytest.raises(ValueError, match="seed_data must not be a held-out seed"):
        ScriptArguments(task="arith", seed_data=3)
    with pytest.raises(ValueError, match="think_share must be in"):
        ScriptArguments(task="arith", think_share=1.5)
    assert ScriptArguments(task="arith").reward_funcs == ["correct", "no_think_bonus"]
    assert ScriptArguments(task="hops").reward_funcs == ["correct", "search_cost"]
    with pytest.raises(ValueError, match="hops_types must be a non-empty subset"):
        ScriptArguments(task="hops", hops_types=["bridge", "trivia"])
    with pytest.raises(ValueError, match="seed_data must be 1 for hops"):
        ScriptArguments(task="hops", seed_data=3)
    with pytest.raises(ValueError, match="search_cost must be >= 0, got -1"):
        ScriptArguments(task="hops", search_cost=-1)


def test_information_gain_is_positive_when_the_thought_spells_the_answer():
    """A tiny model trained for a few steps to copy the thought's last token: the thought that holds the
    answer gains information over no thought; a misleading one loses it."""
    import torch
    from tests.helpers import byte_bpe_tokenizer, tiny_llama
    from tasks.ntr import information_gain

    torch.manual_seed(0)
    tok = byte_bpe_tokenizer()
    model = tiny_llama(len(tok)).train()
    prompt = tok.encode("<|im_start|>user\n4 + 3 =<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    good = "<think>\n4 + 3 = 7\n</think>\n\\boxed{ 7"
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = torch.tensor([prompt + tok.encode(good, add_special_tokens=False)])
    for _ in range(60):  # memorise the sequence with the thought
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    assert information_gain(model, tok, prompt, "4 + 3 = 7", " 7") > 0
    with pytest.raises(ValueError, match="target is empty"):
        information_gain(model, tok, prompt, "x", "")
