"""tasks.hops: the generated world, its disjoint splits, the two-hop structure of its pages, the
exact-match scorer, and its ingestion through the public ingest path."""
import pytest

from tasks import family, load_items
from tasks.hops import HopsFamily, World, build_index, make_items, page_name, world
from tests.helpers import FakeEmbedder


def test_world_is_deterministic_and_names_are_unique():
    a, b = World(5, sizes={"train": 20, "dev": 5, "test": 5}), World(5, sizes={"train": 20, "dev": 5, "test": 5})
    assert a.pages() == b.pages()
    names = [w.name for w in a.works] + list(a.people) + a.cities
    assert len({n.lower() for n in names}) == len(names)


def test_splits_are_disjoint_by_entity():
    test = load_items("hops-bridge", 250, 3)
    train = load_items("hops-bridge", 400, 1)
    dev = load_items("hops-single", 150, 2)
    works = lambda items: {s for it in items for s in it.meta["sources"] if s.startswith("work-")}
    assert not works(test) & works(train)
    assert not works(dev) & works(train)
    with pytest.raises(ValueError, match="seed"):
        make_items("hops-bridge", 5, 7)
    with pytest.raises(ValueError, match="asked for"):
        make_items("hops-bridge", 251, 3)


def test_a_bridge_question_needs_both_pages():
    w = world()
    pages = w.pages()
    for it in load_items("hops-bridge", 50, 3):
        first, second = it.meta["sources"]
        bridge = it.meta["bridge"]
        assert bridge in pages[first] and it.answer not in pages[first]  # the work names the creator only
        assert it.answer in pages[second]
        work = first.removeprefix("work-").removesuffix(".md")
        assert work not in pages[second]  # the person's page never names the work
        assert bridge not in it.question


def test_comparison_answer_is_the_earlier_release():
    w = world()
    years = {x.name: x.year for x in w.works}
    for it in load_items("hops-comparison", 40, 2):
        a, b = it.meta["options"]
        assert years[a] != years[b]
        assert it.answer == (a if years[a] < years[b] else b)


def test_scorer_takes_the_first_candidate_of_the_answer_kind():
    it = load_items("hops-bridge", 1, 3)[0]
    fam = family(it)
    assert isinstance(fam, HopsFamily)
    other = next(c for c in world().cities if c != it.answer)
    assert fam.score(f"{it.meta['bridge']} was born in {it.answer}.", it) == 1.0
    assert fam.score(f"<think>\nmaybe {other}\n</think>\nIn {it.answer}.", it) == 1.0  # thoughts are not the answer
    assert fam.score(f"{other}, not {it.answer}.", it) == 0.0
    assert fam.score("I do not know.", it) == 0.0
    year = next(x for x in load_items("hops-single", 3, 3) if x.meta["answer_kind"] == "year")
    assert fam.score(f"It was first released in {year.answer}.", year) == 1.0
    assert fam.score(f"In {int(year.answer) + 1}.", year) == 0.0


def test_corpus_is_ingested_through_the_public_path(tmp_path):
    r = build_index(tmp_path / "corpus", tmp_path / "idx", FakeEmbedder())
    n = len(r)
    assert n >= len(world().pages())
    it = load_items("hops-single", 2, 3)[1]
    hits = r.search(it.question, 5)
    assert any(h.source.endswith(page_name("work", it.question.split()[-1].rstrip("?"))) for h in hits)
    again = build_index(tmp_path / "corpus", tmp_path / "idx", FakeEmbedder())  # unchanged pages are skipped
    assert len(again) == n


def test_hops_report_pairs_each_mode_with_retrieve_once(tmp_path):
    import json

    from evals.hops import main, report

    rows = []
    for i in range(20):
        for mode, score, searches in (("once", float(i < 5), 0), ("flare", float(i < 15), 1)):
            rows.append({"id": f"hops-bridge-test-{i}", "type": "bridge", "bucket": "hard", "mode": mode, "effort": "auto",
                         "model": "m", "score": score, "searches": searches, "gold_shown": mode == "flare",
                         "generated": 10 + 20 * searches, "thought": bool(searches)})
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = {(e["mode"]): e for e in report(tmp_path)["summary"]}
    assert summary["once"]["accuracy"] == 0.25 and summary["flare"]["accuracy"] == 0.75
    vs = summary["flare"]["vs_once"]
    assert vs["diff"] == 0.5 and vs["a_only"] == 10 and vs["b_only"] == 0 and vs["mcnemar_p"] < 0.01
    assert summary["flare"]["searches"] == 1.0 and "vs_once" not in summary["once"]
    assert "+0.500" in (tmp_path / "summary.md").read_text()
    with pytest.raises(SystemExit, match="unknown mode"):
        main(["run", "--modes", "sometimes", "--out", str(tmp_path / "x")])


def test_hops_report_pairs_with_a_baseline_run_on_shared_items(tmp_path):
    import json

    from evals.hops import main, report

    def write(d, model, n, correct):
        d.mkdir()
        rows = [{"id": f"hops-bridge-test-{i}", "type": "bridge", "bucket": "hard", "mode": "flare" if model == "t" else "once",
                 "effort": "auto", "model": model, "score": float(i < correct), "searches": 0, "gold_shown": True,
                 "generated": 5, "thought": False} for i in range(n)]
        (d / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    write(tmp_path / "trained", "t", 10, 8)
    write(tmp_path / "base", "b", 20, 2)           # the base answered more items: only the shared 10 pair
    e = report(tmp_path / "trained", tmp_path / "base")["summary"][0]
    assert e["vs_baseline"]["n"] == 10 and e["vs_baseline"]["diff"] == 0.6 and "vs_once" not in e
    assert "10: +0.600" in (tmp_path / "trained" / "summary.md").read_text()
    with pytest.raises(SystemExit, match="no rows.jsonl in the baseline"):
        main(["report", "--out", str(tmp_path / "trained"), "--baseline", str(tmp_path / "nowhere")])


def test_hops_report_pairs_a_trained_run_with_its_start_in_the_same_mode(tmp_path):
    import json

    from evals.hops import main, report

    def write(d, model, mode, correct):
        d.mkdir(exist_ok=True)
        rows = [{"id": f"hops-bridge-test-{i}", "type": "bridge", "bucket": "hard", "mode": mode, "effort": "auto",
                 "model": model, "score": float(i < correct), "searches": 1, "gold_shown": True, "generated": 5,
                 "thought": True} for i in range(10)]
        with (d / "rows.jsonl").open("a") as f:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")

    write(tmp_path / "rl", "rl", "flare", 9)
    write(tmp_path / "warm", "warm", "flare", 6)
    write(tmp_path / "warm", "warm", "once", 0)      # another mode of the start: not paired with flare
    e = report(tmp_path / "rl", start=tmp_path / "warm")["summary"][0]
    assert e["vs_start"]["n"] == 10 and e["vs_start"]["diff"] == pytest.approx(0.3)
    assert "vs start, same mode" in (tmp_path / "rl" / "summary.md").read_text()
    with pytest.raises(SystemExit, match="no rows.jsonl in the start"):
        main(["report", "--out", str(tmp_path / "rl"), "--start", str(tmp_path / "nowhere")])
