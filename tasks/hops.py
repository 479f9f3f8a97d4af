"""Two-hop questions over generated documents (issue 29): facts the policy cannot know, found only
by searching a task index, where a bridge question needs a second search whose query comes from
what the first passage said (HotpotQA's bridge / comparison types; Yang et al., arXiv 1809.09600).

Contract:
- `World(seed)` invents a small encyclopedia, deterministic in its seed: software projects (work),
  each created by one person and first released in one year; people, each born in one city; cities.
  Names are built from syllables, so the policy cannot know any fact. Distractor people share a
  surname with a creator, and every page of a kind uses the same words ("created by", "born in"),
  so lexical and dense matching alone do not single out the right page.
- `write_corpus(dir)` writes one Markdown page per entity (`World.pages`); `build_index(dir)`
  ingests them through the public ingest path (`retrieval.retriever.Retriever.ingest`), the same
  one ``thinkgate ingest`` uses. A work's page names its creator but not where they were born; a
  person's page names no work: a bridge question is answerable only from two pages.
- Question types (`TYPES`), each a task set ``hops-<type>`` for `tasks.load_items`:
  * ``bridge`` (hard): "In which city was the creator of quillmark born?" → a city (pages: the work's,
    then its creator's, found through the name the first page gives);
  * ``comparison`` (hard): "Which was first released earlier, quillmark or tessaline?" → one of the two
    (pages: both works');
  * ``single`` (easy, the same facts one hop away): "In which city was Orvel Tanquist born?",
    "Who created quillmark?", "In which year was quillmark first released?".
- Splits are disjoint by entity: the world's works (with their creators) are partitioned into train /
  dev / test by `SPLIT_SEEDS` (seed 1, 2, 3); every question of a split is about its own works only,
  while the index holds the whole world (as a real collection would).
- Served with retrieval (``Item.retrieval``): the prompt is the agent's (`tasks.prompt`).
- `HopsFamily.score` is exact match on the answer's kind: the first candidate of that kind (a known
  city, person or year, or one of the two compared works) named in the answer part must be the
  reference (so "Orvel Tanquist, the creator, was born in Vashmere" is right for the city).
  ``item.meta["sources"]`` names the gold pages (file names) in hop order, for recall@k.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tasks.base import Item, TaskFamily

SPLIT_SEEDS = {"train": 1, "dev": 2, "test": 3}
TYPES = {"bridge": "hard", "comparison": "hard", "single": "easy"}
#: works per split in the default world (test and dev ≥ 150 bridge questions each)
SPLIT_SIZES = {"train": 400, "dev": 150, "test": 250}
WORLD_SEED = 29

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "qu", "r", "s", "st", "t",
           "tr", "v", "w", "z", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"]
_CODAS = ["", "n", "r", "l", "s", "m", "th", "nd", "rk", "x", "st", "sk"]
_CITY_ENDS = ["mere", "ford", "holm", "wick", "stad", "burg", "port", "vale", "mont", "haven"]
_WORK_ENDS = ["mark", "line", "kit", "flow", "lib", "tool", "gram", "scope", "lint", "base"]
_KINDS = ["a library for parsing configuration files", "a command-line tool for renaming files in bulk",
          "a library for drawing charts in the terminal", "a test runner for small scripts",
          "a library for reading spreadsheet files", "a tool that formats source code",
          "a library for scheduling background jobs", "a package manager for plugins",
          "a library for caching function results", "a tool for comparing two folders",
          "a library for validating form input", "a static site generator"]
_JOBS = ["software engineer", "programmer", "computer scientist", "systems administrator", "data engineer",
         "mathematician who writes software", "hardware designer", "technical writer"]
_TOPICS = ["compilers", "databases", "networking", "typography", "numerical methods", "operating systems",
           "graphics", "music software"]
_COUNTRIES = ["Pelland", "Ostrava Minor", "Keldor", "Varnia", "Illuria", "Taskany"]


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + (rng.choice(_CODAS) if i == syllables - 1 else "")
                   for i in range(syllables))


@dataclass(frozen=True)
class Work:
    """A software project: `name` (lower case), what it is (`kind`), its `creator` (a person's full
    name), its first release `year`, and the `split` it belongs to."""

    name: str
    kind: str
    creator: str
    year: int
    split: str


@dataclass(frozen=True)
class Person:
    """A person: full `name`, `city` of birth, `job`, `topic`; `creator` says whether a work names them."""

    name: str
    city: str
    job: str
    topic: str
    creator: bool


class World:
    """The generated encyclopedia of one seed (see the module docstring).

    Args:
        seed: generator seed (`WORLD_SEED` is the served task's world).
        sizes: works per split (`SPLIT_SIZES`).
        n_cities: cities people are born in (answers of bridge questions repeat across questions).
        decoys: distractor people per creator (sharing the creator's surname, born elsewhere).
    """

    def __init__(self, seed: int = WORLD_SEED, sizes: dict[str, int] | None = None, n_cities: int = 60,
                 decoys: float = 0.5):
        rng = random.Random(seed)
        sizes = dict(SPLIT_SIZES if sizes is None else sizes)
        used: set[str] = set()

        def fresh(make) -> str:
            while True:
                w = make()
                if w.lower() not in used and len(w) >= 4:
                    used.add(w.lower())
                    return w

        self.cities = [fresh(lambda: _word(rng, rng.choice([1, 2])).capitalize() + rng.choice(_CITY_ENDS))
                       for _ in range(n_cities)]
        self.city_country = {c: rng.choice(_COUNTRIES) for c in self.cities}
        self.people: dict[str, Person] = {}
        self.works: list[Work] = []
        for split in SPLIT_SEEDS:
            for _ in range(sizes.get(split, 0)):
                first = fresh(lambda: _word(rng, 2).capitalize())
                last = fresh(lambda: _word(rng, 2).capitalize() + rng.choice(["", "er", "son", "ist", "ing"]))
                person = Person(f"{first} {last}", rng.choice(self.cities), rng.choice(_JOBS), rng.choice(_TOPICS), True)
                self.people[person.name] = person
                if rng.random() < decoys:
                    other = fresh(lambda: _word(rng, 2).capitalize())
                    city = rng.choice([c for c in self.cities if c != person.city])
                    self.people[f"{other} {last}"] = Person(f"{other} {last}", city, rng.choice(_JOBS),
                                                            rng.choice(_TOPICS), False)
                name = fresh(lambda: _word(rng, rng.choice([1, 2])) + rng.choice(_WORK_ENDS))
                self.works.append(Work(name, rng.choice(_KINDS), person.name, rng.randint(1988, 2023), split))

    def pages(self) -> dict[str, str]:
        """file name → Markdown text of every page (works, people, cities)."""
        out: dict[str, str] = {}
        for w in self.works:
            out[page_name("work", w.name)] = (
                f"# {w.name}\n\n{w.name} is {w.kind}. It was created by {w.creator} and first released in "
                f"{w.year}. It is distributed under an open-source licence and maintained by volunteers.\n")
        for p in self.people.values():
            surname = p.name.split()[-1]
            out[page_name("person", p.name)] = (
                f"# {p.name}\n\n{p.name} is a {p.job} born in {p.city}. {surname} is known for work on "
                f"{p.topic} and has given talks at several conferences.\n")
        for c in self.cities:
            out[page_name("city", c)] = (
                f"# {c}\n\n{c} is a city in {self.city_country[c]}. Many engineers and writers were born in "
                f"{c}, which is known for its old harbour and its spring festival.\n")
        return out

    def items(self, kind: str, split: str, n: int) -> list[Item]:
        """The first `n` questions of type `kind` about the works of `split` (deterministic).

        Raises:
            ValueError: an unknown type or split, or more questions than the split has works.
        """
        if kind not in TYPES:
            raise ValueError(f"unknown question type {kind!r}; known: {list(TYPES)}")
        if split not in SPLIT_SEEDS:
            raise ValueError(f"unknown split {split!r}; known: {list(SPLIT_SEEDS)}")
        works = [w for w in self.works if w.split == split]
        if n > len(works):
            raise ValueError(f"hops-{kind} has {len(works)} questions in split {split}, asked for {n}")
        rng = random.Random(f"{kind}-{split}")
        items: list[Item] = []
        for i, w in enumerate(works[:n]):
            person = self.people[w.creator]
            if kind == "bridge":
                q = rng.choice(["In which city was the creator of {w} born?", "Where was the person who created {w} born?",
                                "The creator of {w} was born in which city?"]).format(w=w.name)
                meta = {"answer_kind": "city", "sources": [page_name("work", w.name), page_name("person", w.creator)],
                        "bridge": w.creator}
                answer = person.city
            elif kind == "comparison":
                other = next(o for o in (works[(i + j) % len(works)] for j in range(1, len(works))) if o.year != w.year)
                a, b = (w, other) if rng.random() < 0.5 else (other, w)
                q = rng.choice(["Which was first released earlier, {a} or {b}?", "Which is older, {a} or {b}?",
                                "Was {a} or {b} released first?"]).format(a=a.name, b=b.name)
                meta = {"answer_kind": "option", "options": [a.name, b.name],
                        "sources": [page_name("work", a.name), page_name("work", b.name)]}
                answer = min(a, b, key=lambda x: x.year).name
            else:
                form = i % 3
                if form == 0:
                    q, answer, ak = f"In which city was {w.creator} born?", person.city, "city"
                    src = [page_name("person", w.creator)]
                elif form == 1:
                    q, answer, ak, src = f"Who created {w.name}?", w.creator, "person", [page_name("work", w.name)]
                else:
                    q, answer, ak = f"In which year was {w.name} first released?", str(w.year), "year"
                    src = [page_name("work", w.name)]
                meta = {"answer_kind": ak, "sources": src}
            items.append(Item(f"hops-{kind}-{split}-{i}", "hops", q, answer, bucket=TYPES[kind], retrieval=True,
                              meta={**meta, "type": kind}))
        return items


def page_name(kind: str, name: str) -> str:
    """The file name of an entity's page, e.g. ``person-orvel-tanquist.md``.

    >>> page_name("person", "Orvel Tanquist")
    'person-orvel-tanquist.md'
    """
    return f"{kind}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.md"


@lru_cache(maxsize=4)
def world(seed: int = WORLD_SEED) -> World:
    """The (cached) world of `seed`."""
    return World(seed)


def make_items(name: str, n: int, seed: int) -> list[Item]:
    """Items of task set ``hops-<type>`` at split seed `seed` (1 train, 2 dev, 3 test).

    Raises:
        ValueError: an unknown set or seed.
    """
    kind = name.removeprefix("hops-")
    splits = {v: k for k, v in SPLIT_SEEDS.items()}
    if seed not in splits:
        raise ValueError(f"hops sets are split by seed 1 (train), 2 (dev), 3 (test); got seed {seed}")
    return world().items(kind, splits[seed], n)


SETS = tuple(f"hops-{t}" for t in TYPES)


def write_corpus(directory: str | Path, w: World | None = None) -> list[Path]:
    """Write every page of world `w` (default `world()`) as Markdown under `directory`; returns paths.
    Unchanged pages keep their mtime-independent content, so a re-ingest skips them."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (w or world()).pages().items():
        p = d / name
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
        paths.append(p)
    return paths


def build_index(corpus_dir: str | Path, index_dir: str | Path, embedder=None, progress: bool = False):
    """Write the corpus and ingest it into the index at `index_dir` through the public ingest path
    (`retrieval.retriever.Retriever.ingest`); returns the open `Retriever`."""
    from retrieval.retriever import Retriever

    write_corpus(corpus_dir)
    r = Retriever(index_dir, embedder) if embedder is not None else Retriever(index_dir)
    r.ingest([Path(corpus_dir)], progress=progress)
    return r


class HopsFamily(TaskFamily):
    """Two-hop and single-hop questions: exact match on the first candidate of the answer's kind."""

    name = "hops"

    def candidates(self, item: Item) -> list[str]:
        """The names the answer is chosen among: the world's cities or people, or the two options
        (years are matched as any 4-digit number)."""
        ak = item.meta["answer_kind"]
        if ak == "option":
            return list(item.meta["options"])
        if ak == "city":
            return list(world().cities)
        if ak == "person":
            return list(world().people)
        return []

    def extract(self, text: str, item: Item | None = None) -> str:
        """The first candidate named in the answer part (word-bounded, any case), else the stripped
        answer part. Years: the first 4-digit number.

        >>> it = make_items("hops-bridge", 1, 3)[0]
        >>> HopsFamily().extract(f"It was born in {it.answer}, I think.", it) == it.answer
        True
        """
        ans = self.answer_part(text)
        if item is None:
            return ans.strip()
        if item.meta["answer_kind"] == "year":
            m = re.search(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)", ans)
            return m.group(1) if m else ans.strip()
        best = None
        for c in self.candidates(item):
            m = re.search(r"(?<!\w)" + re.escape(c) + r"(?!\w)", ans, re.IGNORECASE)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), c)
        return best[1] if best else ans.strip()

    def score(self, text: str, item: Item) -> float:
        """1.0 when `extract` gives the reference answer, else 0.0 (also the RL reward).

        >>> it = make_items("hops-comparison", 1, 3)[0]
        >>> a, b = it.meta["options"]
        >>> wrong = b if it.answer == a else a
        >>> HopsFamily().score(f"{it.answer} came before {wrong}.", it), HopsFamily().score(f"{wrong}.", it)
        (1.0, 0.0)
        """
        return 1.0 if self.extract(text, item) == item.answer else 0.0


FAMILY = HopsFamily()
