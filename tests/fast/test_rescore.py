"""evals.rescore: stored rows scored again against corrected references, nothing generated."""
import json

import pytest

pytest.importorskip("reasoning_gym")

from evals.rescore import main, rescore_rows  # noqa: E402
from tasks import load_items  # noqa: E402


def test_rows_follow_the_corrected_multidigit_reference(tmp_path, capsys):
    it = next(i for i in load_items("multidigit", 150, 3) if "rg_answer" in i.meta)  # a + b * c, read left to right
    old, new = it.meta["rg_answer"], it.answer
    forced = {"id": it.id, "direct_text": f" {old}", "direct_score": 1.0, "think_text": f"<think>\nx\n</think>\n {new}",
              "think_score": 0.0, "meta": {"set": "multidigit", "answer": old}}
    learned = {"id": it.id, "set": "multidigit", "text": f" {new}", "score": 0.0}
    docs = {"id": "docs-3", "text": "anything", "score": 1.0}  # not a numeric set: left alone
    rows = [forced, learned, docs]
    assert rescore_rows(rows) == 2
    assert (forced["direct_score"], forced["think_score"], forced["meta"]["answer"]) == (0.0, 1.0, new)
    assert learned["score"] == 1.0 and docs["score"] == 1.0
    f = tmp_path / "test-multidigit.jsonl"
    f.write_text(json.dumps({**forced, "direct_score": 1.0}) + "\n")
    main([str(f)])
    assert json.loads(f.read_text())["direct_score"] == 0.0 and "1 rows changed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.jsonl")])
