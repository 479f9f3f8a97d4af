"""Reward functions for GRPO, in a string-keyed registry (TRL's reward-function signature).

TRL calls ``f(completions, **columns) → list[float | None]``; `completions` are strings
or, for conversational prompts, lists of ``{"role", "content"}`` messages (the last one's
content is used). Dataset columns arrive as keyword lists, one value per completion:
``continuation`` and ``boundaries`` (NTR task), ``item`` (a `tasks.Item` as JSON: its family's
scorer is the reward, so training and evaluation score alike); TRL also passes
``prompts``, ``completion_ids``, ``trainer_state`` and ``log_metric``. Each function names the
columns and parameters it reads and takes nothing else (no ``**kwargs``): `get_reward_funcs`
binds its parameters and hands it only the columns it names (`call_named`), so a column a
function expects but never receives stays visibly None instead of vanishing into a catch-all.
`None` means "does not apply" (TRL skips it for that sample).

A completion either thinks, ``<think>…</think>`` then the answer, or answers at once; the
answer to an NTR prompt is the content of the last ``\\boxed{…}``.

Registry: `REWARDS[name]`; weights come from the training config (`--reward_weights`).
"""
from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable

from policy.format import THINK_CLOSE, THINK_OPEN, extract_boxed, prefix_match_score, split_think

RewardFn = Callable[..., list[float | None]]
REWARDS: dict[str, RewardFn] = {}


def register(name: str):
    """Decorator: add a reward function to `REWARDS` under `name`."""
    def deco(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn
    return deco


def completion_text(c) -> str:
    """Text of one completion (a string, or a list of chat messages: the last content)."""
    if isinstance(c, str):
        return c
    if isinstance(c, list) and c:
        return str(c[-1].get("content", ""))
    return str(c)


def final_answer(text: str) -> str:
    """The answer part of a completion: after ``</think>`` when it thinks, else all of it."""
    return split_think(text)[1] if text.lstrip().startswith(THINK_OPEN) else text


def thinks(text: str) -> bool:
    """True when the completion opens with ``<think>``."""
    return text.lstrip().startswith(THINK_OPEN)


@register("prefix_match")
def prefix_match(completions, continuation=None, boundaries=None) -> list[float | None]:
    """NTR correctness: RPT Eq. 3 on the last ``\\boxed{}`` of the answer part.

    Unit cases (continuation " the cat", token boundaries at bytes 4 and 8):

    >>> c, b = [" the cat"], [[4, 8]]
    >>> prefix_match([r"\\boxed{ the}"], c, b)          # exact single token
    [1.0]
    >>> prefix_match([r"\\boxed{ the cat}"], c, b)      # two tokens
    [1.0]
    >>> prefix_match([r"\\boxed{ th}"], c, b)           # partial token
    [0.0]
    >>> prefix_match([r"\\boxed{the}"], c, b)           # missing leading space
    [0.0]
    >>> prefix_match(["the"], c, b)                    # no box
    [0.0]
    >>> prefix_match([r"\\boxed{ dog} \\boxed{ the}"], c, b)  # last box wins
    [1.0]
    >>> prefix_match([r"\\boxed{ñ}"], ["ñu"], [[2, 3]])   # non-ASCII: ñ is 2 bytes
    [1.0]
    """
    if continuation is None or boundaries is None:
        return [None] * len(completions)
    out: list[float | None] = []
    for c, cont, bnd in zip(completions, continuation, boundaries):
        out.append(prefix_match_score(extract_boxed(final_answer(completion_text(c))), cont, list(bnd)))
    return out


@register("information_gain")
def information_gain(completions, prompts=None, continuation=None, ig_scorer=None,
                     ig_clip: float = 2.0) -> list[float | None]:
    """RLP's reward (arXiv 2510.01265, Eq. 2–3) on NTR rows: for a completion that thinks, the
    information gain of its thought, log p(continuation | prompt, thought) − log p(continuation |
    prompt) in nats, teacher-forced by `ig_scorer` (`tasks.ntr.GainScorer`: the same quantity
    ``evals.modes`` reports), clipped to ±`ig_clip`; 0 for a completion that answers at once (no
    thought, no gain). So thinking pays exactly where it raises the true text's probability.
    None on rows without a continuation (arithmetic items) or without a scorer.

    >>> fake = lambda prompt, thought, target: 3.0 if "Tokyo" in thought else -0.4
    >>> information_gain(["<think>Japan: Tokyo</think>\\boxed{ Tokyo}", "<think>hm</think>\\boxed{ x}",
    ...                   "\\boxed{ Tokyo}"], prompts=["p"] * 3, continuation=[" Tokyo"] * 3, ig_scorer=fake)
    [2.0, -0.4, 0.0]
    """
    if continuation is None or ig_scorer is None or prompts is None:
        return [None] * len(completions)
    out: list[float | None] = []
    for c, p, cont in zip(completions, prompts, continuation):
        text = completion_text(c)
        if not thinks(text):
            out.append(0.0)
            continue
        gain = ig_scorer(completion_text(p), split_think(text)[0] or "", cont)
        out.append(max(-ig_clip, min(ig_clip, gain)))
    return out


@register("correct")
def correct(completions, item=None) -> list[float | None]:
    """Binary correctness by the item's own task scorer (`tasks.family(item).score`), 1 or 0.

    >>> import json; from tasks import Item
    >>> it = json.dumps(Item("a", "arith", "What is 2 + 3?", "5", "easy", "2 + 3 = 5").to_dict())
    >>> correct(["<think>\\n2 + 3 = 5\\n</think>\\n5", "6"], item=[it, it])
    [1.0, 0.0]
    """
    if item is None:
        return [None] * len(completions)
    from tasks import Item, family

    out: list[float | None] = []
    for c, raw in zip(completions, item):
        it = Item.from_dict(json.loads(raw) if isinstance(raw, str) else raw)
        out.append(float(family(it).score(completion_text(c), it)))
    return out


def correctness(completions, continuation=None, boundaries=None, item=None) -> list[float | None]:
    """The task's own correctness: the item's scorer when rows carry ``item``, else prefix_match (NTR rows)."""
    if item is not None:
        return correct(completions, item=item)
    return prefix_match(completions, continuation=continuation, boundaries=boundaries)


def think_token_count(text: str, n_ids: int | None) -> int:
    """Tokens inside ``<think>…</think>``: the completion's token count scaled by the share of
    characters that are reasoning (no tokenizer reaches reward functions); words when ids are absent."""
    if not thinks(text):
        return 0
    body = text.split(THINK_OPEN, 1)[1].split(THINK_CLOSE, 1)[0]
    if n_ids is None:
        return len(body.split())
    return round(n_ids * len(body) / max(len(text), 1))


@register("think_length")
def think_length(completions, completion_ids=None, think_budget: int = 256) -> list[float | None]:
    """Penalty for thinking tokens: −min(1, thinking tokens / `think_budget`); 0 when it does not think.

    >>> think_length(["<think>" + "a " * 50 + "</think>x", "x"], think_budget=100)
    [-0.5, 0.0]
    """
    out: list[float | None] = []
    for i, c in enumerate(completions):
        n = len(completion_ids[i]) if completion_ids is not None else None
        out.append(-min(1.0, think_token_count(completion_text(c), n) / think_budget) + 0.0)  # no -0.0
    return out


@register("correct_think_length")
def correct_think_length(completions, completion_ids=None, item=None, continuation=None, boundaries=None,
                         think_budget: int = 256) -> list[float | None]:
    """The thinking-token penalty of `think_length`, paid only by correct completions (Arora & Zanette,
    "Training Language Models to Reason Efficiently", arXiv 2502.04463, Eq. 3: r = 1[correct] ·
    (1 − α·f(length))): among right answers the shorter trace wins, and a group where every rollout is
    wrong gets no length signal at all. With the unconditional penalty such a group still ranks the
    answer-at-once rollouts above the thinking ones, and batch std scaling magnifies that into the run's
    largest gradients (measured on the 0.5B mix: 16 steps drove think-rate on GSM from 0.93 to 0.37).

    >>> import json; from tasks import Item
    >>> it = json.dumps(Item("a", "arith", "What is 2 + 3?", "5", "easy", "2 + 3 = 5").to_dict())
    >>> correct_think_length(["<think>" + "a " * 50 + "</think>5", "<think>" + "a " * 50 + "</think>6", "5"],
    ...                      item=[it] * 3, think_budget=100)
    [-0.5, 0.0, 0.0]
    """
    ok = correctness(completions, continuation=continuation, boundaries=boundaries, item=item)
    cost = think_length(completions, completion_ids=completion_ids, think_budget=think_budget)
    return [c if o == 1.0 else 0.0 for c, o in zip(cost, ok)]


@register("no_think_bonus")
def no_think_bonus(completions, no_think_delta: float = 1.0, continuation=None, boundaries=None,
                   item=None) -> list[float | None]:
    """AdaptThink's bonus (arXiv 2505.13417): δ when the completion answers without thinking
    and is correct; 0 otherwise.

    >>> no_think_bonus([r"\\boxed{ the}", r"<think>hm</think>\\boxed{ the}"], no_think_delta=0.5,
    ...                continuation=[" the"] * 2, boundaries=[[4]] * 2)
    [0.5, 0.0]
    """
    ok = correctness(completions, continuation=continuation, boundaries=boundaries, item=item)
    return [no_think_delta if (o == 1.0 and not thinks(completion_text(c))) else 0.0
            for c, o in zip(completions, ok)]


@register("search_cost")
def search_cost(completions, searches=None, search_cost: float = 0.1) -> list[float | None]:
    """A cost per ``<search>`` call answered during the rollout: −`search_cost` × calls (issue 29:
    search only when needed, as think only when needed). ``searches`` comes from the rollout
    (`training.search_rollout`); None when the rollout does not search.

    >>> search_cost(["a", "b", "c"], searches=[0, 1, 2], search_cost=0.1)
    [0.0, -0.1, -0.2]
    """
    if searches is None:
        return [None] * len(completions)
    return [-search_cost * s + 0.0 for s in searches]


@register("soft_overlong")
def soft_overlong(completions, completion_ids=None, max_completion_length: int = 256,
                  overlong_buffer: int = 64) -> list[float | None]:
    """DAPO's soft overlong punishment (arXiv 2503.14476, Eq. 13), with L_max =
    `max_completion_length` and L_cache = `overlong_buffer`:
    0 if |y| ≤ L_max − L_cache; (L_max − L_cache − |y|) / L_cache inside the buffer; −1 beyond L_max.

    >>> soft_overlong(["a", "b", "c"], completion_ids=[[0] * 10, [0] * 28, [0] * 40],
    ...               max_completion_length=32, overlong_buffer=8)
    [0.0, -0.5, -1.0]
    """
    if completion_ids is None:
        return [None] * len(completions)
    lo = max_completion_length - overlong_buffer
    out: list[float | None] = []
    for ids in completion_ids:
        n = len(ids)
        out.append(0.0 if n <= lo else (-1.0 if n > max_completion_length else (lo - n) / overlong_buffer))
    return out


@register("format")
def format_reward(completions, continuation=None) -> list[float | None]:
    """1 when the completion is well formed, else 0: either one ``<think>…</think>`` block at the
    start followed by a non-empty answer, or no think tags at all; for NTR rows the answer must
    also hold a ``\\boxed{}``.

    >>> format_reward(["<think>a</think> \\\\boxed{x}", "\\\\boxed{x}", "<think>a", "a</think>b"],
    ...               continuation=["x"] * 4)
    [1.0, 1.0, 0.0, 0.0]
    """
    need_box = continuation is not None
    out: list[float | None] = []
    for c in completions:
        t = completion_text(c)
        n_open, n_close = t.count(THINK_OPEN), t.count(THINK_CLOSE)
        if thinks(t):
            ok = n_open == 1 and n_close == 1 and bool(split_think(t)[1])
        else:
            ok = n_open == 0 and n_close == 0 and bool(t.strip())
        if ok and need_box:
            ok = extract_boxed(final_answer(t)) is not None
        out.append(1.0 if ok else 0.0)
    return out


@functools.cache
def named_parameters(fn) -> tuple[frozenset[str], bool]:
    """(names `fn` takes by keyword, whether it also takes ``**kwargs``); read once per function."""

    params = inspect.signature(fn).parameters.values()
    names = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def call_named(fn, completions, columns: dict):
    """``fn(completions, **columns)`` with only the columns `fn` names (all of them when it takes
    ``**kwargs``): TRL hands every reward function every dataset column and its own arguments.

    >>> call_named(lambda completions, item=None: [item], ["c"], {"item": 1, "trainer_state": None})
    [1]
    """
    names, takes_all = named_parameters(fn)
    return fn(completions, **(columns if takes_all else {k: v for k, v in columns.items() if k in names}))


def get_reward_funcs(names: list[str], **params) -> list[RewardFn]:
    """Reward functions for `names` in TRL's calling convention ``f(completions, **columns)``, each
    bound to the parameters of `params` that it names in its signature (budgets, δ, lengths) and
    handed only the columns it names (`call_named`); named for TRL's logs (``rewards/<name>``).
    The bound parameters are in each function's ``keywords``.

    Raises:
        ValueError: an unknown name (the message lists the registry).
    """
    funcs = []
    for n in names:
        if n not in REWARDS:
            raise ValueError(f"unknown reward {n!r}; known: {sorted(REWARDS)}")
        fn = REWARDS[n]
        named, _ = named_parameters(fn)
        bound = {k: v for k, v in params.items() if k in named}

        def reward(completions, _fn=fn, _bound=bound, **columns):
            return call_named(_fn, completions, {**columns, **_bound})

        reward.__name__ = n  # TRL logs rewards/<__name__>
        reward.keywords = bound
        funcs.append(reward)
    return funcs
