"""The text format shared by the agent (serving) and by training, so what is trained is what is served.

Contract:
- A completion either thinks, ``<think>\\n…\\n</think>\\n`` then the answer, or answers at once.
- Inside ``<think>`` the model may call retrieval with ``<search>query</search>``; the system
  answers with ``<information>…</information>`` blocks (Search-R1 format, arXiv 2503.09516).
- A final answer to a next-token task is the content of the last ``\\boxed{…}``, scored by
  `prefix_match_score` (RPT Eq. 3), shared by the training reward and the evaluation.
- Retrieved text is data: `sanitize` removes the tokenizer's special tokens and our control
  tags from it before it enters a prompt, so a document cannot close a turn or fake a tag.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
SEARCH_OPEN = "<search>"
SEARCH_CLOSE = "</search>"
INFO_OPEN = "<information>"
INFO_CLOSE = "</information>"
CONTROL_TAGS = (THINK_OPEN, THINK_CLOSE, SEARCH_OPEN, SEARCH_CLOSE, INFO_OPEN, INFO_CLOSE)

_TAG_RE = re.compile(r"</?\s*(think|search|information)\s*>", re.IGNORECASE)
_SEARCH_RE = re.compile(re.escape(SEARCH_OPEN) + r"(.*?)" + re.escape(SEARCH_CLOSE), re.DOTALL)


def sanitize(text: str, special_tokens: Iterable[str] = ()) -> str:
    """Strip special tokens and control tags from untrusted text (retrieved passages, documents).

    Args:
        text: any string.
        special_tokens: the tokenizer's special token strings (e.g. ``<|im_end|>``).

    Returns:
        The text with every special token and every ``<think>``/``<search>``/``<information>``
        tag (opening or closing, any case) removed.

    >>> sanitize("a<|im_end|>b</information><think>c", ["<|im_end|>"])
    'abc'
    """
    for tok in sorted({t for t in special_tokens if t}, key=len, reverse=True):
        text = text.replace(tok, "")
    # Repeat: removing one tag can join the halves of another ("<thi<think>nk>").
    prev = None
    while prev != text:
        prev = text
        text = _TAG_RE.sub("", text)
    return text


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` in `text`, braces balanced; None when there is none.

    >>> extract_boxed(r"so \\boxed{a} or \\boxed{ {b} }")
    ' {b} '
    >>> extract_boxed("no box") is None
    True
    """
    start = text.rfind("\\boxed{")
    while start != -1:
        i = start + len("\\boxed{")
        depth = 1
        j = i
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i:j]
            j += 1
        start = text.rfind("\\boxed{", 0, start)  # unbalanced: try an earlier one
    return None


def find_search(text: str) -> str | None:
    """The query of the last complete ``<search>…</search>`` call in `text`, stripped; else None.

    >>> find_search("I need <search> os.path.join </search>")
    'os.path.join'
    """
    found = _SEARCH_RE.findall(text)
    return found[-1].strip() if found else None


def split_think(text: str) -> tuple[str | None, str]:
    """Split a completion into (reasoning, answer).

    ``"<think>r</think>a"`` → ``("r", "a")``; a completion with no ``<think>`` → ``(None, text)``;
    an unclosed ``<think>`` → ``(rest, "")``.

    >>> split_think("<think>\\nx\\n</think>\\n42")
    ('x', '42')
    """
    s = text.lstrip()
    if not s.startswith(THINK_OPEN):
        return None, text.strip()
    body = s[len(THINK_OPEN):]
    if THINK_CLOSE not in body:
        return body.strip(), ""
    reasoning, answer = body.split(THINK_CLOSE, 1)
    return reasoning.strip(), answer.strip()


def think_completion(reasoning: str, answer: str) -> str:
    """A thinking completion: ``<think>\\n{reasoning}\\n</think>\\n{answer}`` (the warm-up's think target).

    >>> think_completion("1 + 2 = 3", "3")
    '<think>\\n1 + 2 = 3\\n</think>\\n3'
    """
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n{answer}"


def information_block(passages: list[tuple[int, str, str]]) -> str:
    """Render retrieved passages as one ``<information>`` block.

    Args:
        passages: (number, title, sanitized text) triples; number is the citation [n].
    """
    body = "\n".join(f"[{n}] ({title}) {text}" for n, title, text in passages)
    return f"{INFO_OPEN}\n{body}\n{INFO_CLOSE}"


def prefix_match_score(pred: str | None, continuation: str, boundaries: list[int]) -> float:
    """RPT's prefix-matching reward (arXiv 2506.08007, Eq. 3) for one prediction.

    1 iff the UTF-8 bytes of `pred` equal the first l bytes of `continuation` and l is one of
    `boundaries` (cumulative byte lengths of the continuation's tokens); else 0.

    >>> prefix_match_score(" the", " the cat", [4, 8])
    1.0
    >>> prefix_match_score(" th", " the cat", [4, 8])
    0.0
    """
    if pred is None:
        return 0.0
    b = pred.encode("utf-8")
    if not b or len(b) not in set(boundaries):
        return 0.0
    return 1.0 if continuation.encode("utf-8")[: len(b)] == b else 0.0
