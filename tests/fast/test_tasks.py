"""One task definition: served prompt == training prompt, targets, extraction and scorers."""
import json

import pytest

from tasks import Item, family, load_items, render_prompt
from tasks.arithmetic import FAMILY as ARITH, make_items, running_total_trace
from tasks.docs import FAMILY as DOCS
from tasks.ntr import FAMILY as NTR, ntr_prompt
from tests.helpers import FakeHit, byte_bpe_tokenizer, tiny_llama


def test_running_total_trace_and_bad_expression():
    assert running_total_trace("5 + 8 - 9") == ("5 + 8 = 13\n13 - 9 = 4", 4)
    with pytest.raises(ValueError, match="not a chain"):
        running_total_trace("5 * 3")


def test_buckets_split_by_seed_and_phrased_variously():
    """Hard splits never share an expression; the easy table bucket cycles through its whole space
    (every split holds the same table, shuffled and phrased by its own seed)."""
    test = make_items("hard", 150, 3)
    train = make_items("hard", 400, 1, exclude={i.meta["expression"] for i in test})
    assert len(test) == 150 and len(train) == 400
    assert not {i.meta["expression"] for i in test} & {i.meta["expression"] for i in train}
    dev = {i.meta["expression"] for i in make_items("hard", 300, 2)}
    assert len(dev & {i.meta["expression"] for i in test}) <= 3  # seeds' streams do not overlap (chance only)
    assert all(5 <= i.meta["terms"] <= 7 for i in test)
    easy, easy_train = make_items("easy", 150, 3), make_items("easy", 400, 1)
    assert len({i.meta["expression"] for i in easy}) == 150  # distinct within the first pass
    assert len({i.meta["expression"] for i in easy_train}) == 155  # the whole table, ≥ 0 results
    assert all(i.meta["terms"] == 2 and int(i.answer) >= 0 for i in easy_train)
    assert [i.question for i in easy[:20]] != [i.question for i in easy_train[:20]]
    with pytest.raises(ValueError, match="table bucket"):
        make_items("easy", 5, 1, exclude={"1 + 2"})
    assert len({i.question.replace(i.meta["expression"], "{e}") for i in test}) >= 5  # not one template
    assert make_items("hard", 5, 3)[0].to_dict() == test[0].to_dict()  # a seed gives the same items


def test_targets_extraction_and_scores():
    it = make_items("hard", 1, 3)[0]
    think = ARITH.think_target(it)
    assert think.startswith("<think>\n") and think.endswith(f"\n</think>\n{it.answer}")
    assert ARITH.answer_target(it) == it.answer
    assert ARITH.score(think, it) == 1.0 and ARITH.score(it.answer, it) == 1.0
    assert ARITH.score(f"The answer is {it.answer}.", it) == 1.0
    assert ARITH.score(f"<think>\n{it.answer}", it) == 0.0  # unclosed thinking has no answer
    assert ARITH.score("12", Item("x", "arith", "?", "13")) == 0.0
    d = load_items("docs", 2)[0]
    assert DOCS.score(f"It returns the {d.meta['answers_any'][0]}.", d) == 1.0 and DOCS.score("no idea", d) == 0.0
    with pytest.raises(ValueError, match="no reasoning trace"):
        DOCS.think_target(d)
    n = Item("n", "ntr", "The cat sat on the", " mat", meta={"continuation": " mat.", "boundaries": [4, 5]})
    assert NTR.score("\\boxed{ mat}", n) == 1.0 and NTR.score("\\boxed{mat}", n) == 0.0
    assert NTR.messages(n) == ntr_prompt("The cat sat on the")
    assert family(n) is NTR
    with pytest.raises(ValueError, match="unknown task set"):
        load_items("nope", 1)


async def test_training_prompt_is_token_identical_to_the_served_prompt():
    """The agent's transcript prompt (with a retriever whose hits score below the threshold) and the
    training row's prompt, tokenized as TRL does, are the same ids."""
    from agent.config import AgentConfig
    from agent.runner import Agent
    from policy.transformers_backend import TransformersPolicy
    from training.dual import dual_mode_rows

    tok = byte_bpe_tokenizer()
    policy = TransformersPolicy(tiny_llama(len(tok)), tok, device="cpu")

    class LowScores:
        async def asearch(self, query, k=5):
            return [FakeHit(i, "doc.rst", "Numbers", "2 + 2 is 4 in Python", 0.2) for i in range(k)]

    item = make_items("easy", 1, 3)[0]
    cfg = AgentConfig(min_passage_score=0.45, draft_tokens=2)
    turn = await Agent(policy, LowScores(), cfg).run([{"role": "user", "content": item.question}],
                                                     effort="none", max_tokens=2)
    served = turn.transcript[: turn.metadata["tokens"]["prompt"]]
    row = dual_mode_rows([item], tok)[0]
    trained = tok.encode(row["prompt"], add_special_tokens=False)
    assert served == trained
    assert trained == tok.encode(render_prompt(tok, item), add_special_tokens=False)
    assert json.loads(row["item"])["id"] == item.id and {r["mode"] for r in dual_mode_rows([item], tok)} == {
        "think", "no_think"}
    # passages at or above the threshold are shown, and then the served prompt carries them
    turn2 = await Agent(policy, LowScores(), AgentConfig(min_passage_score=0.1, draft_tokens=2)).run(
        [{"role": "user", "content": item.question}], effort="none", max_tokens=2)
    assert turn2.metadata["tokens"]["prompt"] > len(served) and turn2.metadata["sources"]


def test_docs_api_mined_from_rest_split_disjoint(tmp_path):
    """The API-lookup set: an entry becomes a question only when its first sentence opens with
    "Return" and does not name the function; the committed splits are disjoint and fixed; a seed
    without a split and a bad corpus are refused with a message."""
    from tasks import docs_api

    lib = tmp_path / "library"
    lib.mkdir()
    (lib / "os.rst.txt").write_text(
        ".. module:: os\n\n"
        ".. function:: getcwd()\n\n   Return a string representing the current\n   working directory.  More text.\n\n"
        ".. function:: listdir(path='.')\n\n   Return a list of the entries in :func:`listdir` order.\n\n"
        ".. function:: chdir(path)\n\n   Change the current working directory to *path*.\n\n"
        ".. function:: getpid()\n\n   Return the process id.\n")
    rows = docs_api.mine(tmp_path)
    assert [r["id"] for r in rows] == ["os.getcwd", "os.getpid"]  # names itself / not "Return": dropped
    assert rows[0]["question"] == ("Which function of Python's os module returns a string representing the "
                                   "current working directory?")
    assert rows[0]["answers_any"] == ["getcwd"] and rows[0]["sources"] == ["library/os.rst.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .rst.txt"):
        docs_api.mine(tmp_path / "empty")
    with pytest.raises(ValueError, match="not a folder"):
        docs_api.mine(lib / "os.rst.txt")
    test, dev, train = (load_items("docs-api", 1000, s) for s in (3, 2, 1))
    assert len(test) == 200 and len(dev) == 150 and len(train) >= 150
    ids = [{i.id for i in part} for part in (test, dev, train)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert load_items("docs-api", 5, 3)[0].to_dict() == test[0].to_dict()
    it = test[0]
    assert it.retrieval and family(it) is DOCS and it.meta["answers_any"][0] not in it.question
    assert DOCS.score(f"Use mod.{it.answer}().", it) == 1.0 and DOCS.score(f"Use {it.answer}x.", it) == 0.0
    with pytest.raises(ValueError, match="not 4"):
        load_items("docs-api", 5, 4)
