"""Self-consistency measured on the served backend (issue 27 item 7, `evals.vote`): the sampled
completions are seeded and sampled only in the reasoning, the modes replay the agent's rules
(majority with the greedy sample's certainty, τ_vote, the Beta stop), and the CLI reports or refuses."""
import asyncio
import json

import pytest

from agent.config import AgentConfig
from tests.helpers import MockPolicy


def _script(reasoning="3 + 4 = 7\n</think>", answer="7", r_ent=0.5, a_ent=0.1):
    def script(text, kind):
        if kind == "step":
            return reasoning, r_ent, False
        if kind == "after_think":
            return answer + "\n\n", a_ent, False
        return "<think>", 1.0, False
    return script


def test_think_completion_samples_the_reasoning_and_answers_greedily():
    from evals.quality import think_completion

    policy = MockPolicy(_script())
    c = asyncio.run(think_completion(policy, policy.tokenize("<|im_start|>assistant\n"), AgentConfig(), 64, 8,
                                     temperature=0.4, seed=3))
    (k1, _, p1), (k2, _, p2) = policy.calls
    assert (k1, p1.temperature, p1.seed) == ("step", 0.4, 3)
    assert (k2, p2.temperature) == ("after_think", 0.0)
    assert c["text"].startswith("<think>\n3 + 4 = 7\n</think>") and c["answer"].strip() == "7"
    assert c["reasoning_entropy"] == pytest.approx(0.5) and c["answer_entropy"] == pytest.approx(0.1)


def test_sample_item_keeps_the_direct_answer_only_when_the_model_answers_at_once():
    from evals.vote import sample_item
    from tasks import family, load_items

    item = load_items("onestep", 1, 2)[0]
    policy = MockPolicy(_script(reasoning=f"so {item.answer}\n</think>", answer=str(item.answer)))
    think_id = policy.tokenize("<think>")[0]
    row = asyncio.run(sample_item(policy, policy.tokenize("<|im_start|>assistant\n"), AgentConfig(), family(item),
                                  item, think_id, 3, 8, 64, 8))
    assert row["thought"] and row["direct"] is None
    assert [s["score"] for s in row["samples"]] == [1.0, 1.0, 1.0]
    seeds = [p.seed for kind, _, p in policy.calls if kind == "step"]
    assert seeds == [None, 2, 3]  # sample 1 greedy, then seeded as the agent seeds them


def _row(i, keys, scores, thought=True, r_ent=0.5, tokens=100, direct=None):
    samples = [{"key": k, "score": s, "tokens": tokens, "reasoning_entropy": r_ent, "answer_entropy": 0.2, "text": ""}
               for k, s in zip(keys, scores)]
    return {"id": f"gsm-s2-{i}", "set": "gsm", "bucket": "hard", "thought": thought, "direct": direct,
            "samples": samples}


def test_modes_replay_the_agents_voting_rules():
    from evals.vote import mode_rows

    rows = [
        _row(0, ["1"] + ["2"] * 7, [0] + [1] * 7),            # the greedy trace is wrong, the majority right
        _row(1, ["5"] * 8, [1] * 8),                           # unanimous: the Beta rule stops after 4
        _row(2, ["5"] + ["6"] * 7, [1] + [0] * 7, r_ent=0.05),  # certain after thinking (τ 0.1): no vote
        _row(3, ["9"] * 8, [0] * 8, thought=False, direct={"text": "8", "tokens": 3, "score": 1.0}),
    ]
    m = mode_rows(rows, tau_vote=0.1)
    assert [r["score"] for r in m["always"]] == [0, 1, 1, 0]
    assert [r["score"] for r in m["vote@8"]] == [1, 1, 0, 0]
    assert [r["score"] for r in m["learned"]] == [0, 1, 1, 1]
    assert [r["score"] for r in m["adaptive"]] == [1, 1, 1, 1]
    assert [r["think_tokens"] + r["answer_tokens"] for r in m["adaptive"]][1:] == [400, 100, 3]
    assert m["adaptive"][0]["used"] > 4 and m["vote@8"][0]["think_tokens"] == 800
    # a 1-1 tie between the greedy sample and a sample goes to the greedy one (certainty 0 beats −0.2)
    assert mode_rows([_row(0, ["1", "2"], [1, 0])], tau_vote=0.0)["vote@2"][0]["score"] == 1
    with pytest.raises(ValueError, match="sample counts"):
        mode_rows([_row(0, ["1", "2"], [1, 0]), _row(1, ["1"] * 3, [1] * 3)], tau_vote=0.0)


def test_report_writes_the_table_and_refuses_missing_rows(tmp_path, capsys):
    from evals.vote import main, vote_path

    dest = vote_path(tmp_path, "m", "dev", "gsm")
    dest.parent.mkdir(parents=True)
    dest.write_text("\n".join(json.dumps(_row(i, ["1"] * 4, [1, 1, 1, 1] if i % 2 else [0] * 4)) for i in range(6)))
    main(["report", "--model", "m", "--split", "dev", "--tau", "0,0.6", "--out", str(tmp_path)])
    md = (dest.parent / "vote-dev.md").read_text()
    assert md.count("| gsm |") == 2 and "0.500" in md
    out = json.loads((dest.parent / "vote-dev.json").read_text())
    assert out["sets"]["gsm"][1]["adaptive_token_share"] == pytest.approx(0.25)  # τ 0.6: never votes
    with pytest.raises(SystemExit) as exc:
        main(["report", "--model", "other", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "evals.vote run" in capsys.readouterr().err
