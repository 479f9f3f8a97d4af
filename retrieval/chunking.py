"""The chunker: sections → passages that fit the embedder's window, with overlap.

Contract: every passage's embedding input (``heading + "\\n" + text``) is at most
`max_tokens` word pieces including the model's two special tokens, so no text goes
unembedded (MiniLM truncates at 256). Consecutive passages of a section share about
`overlap` tokens. Cuts fall, by preference, at a paragraph break, then a sentence end,
then a word start, in the last half of a window. Every character of a section's text lies
in at least one passage.
"""
from __future__ import annotations

from dataclasses import dataclass

from retrieval.loaders import Section


@dataclass
class Chunk:
    """A passage: `heading` (the section path), `text`, and `position` (order in its file)."""

    heading: str
    text: str
    position: int = 0

    @property
    def embed_text(self) -> str:
        """What the embedder reads: the heading line, then the text."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


class Chunker:
    """Split sections into passages measured in the embedder tokenizer's word pieces.

    Args:
        tokenizer: a fast (offset-mapping) Hugging Face tokenizer of the embedder.
        max_tokens: the embedder's max sequence length (256 for all-MiniLM-L6-v2).
        overlap: tokens shared by consecutive passages of a section.

    Raises:
        ValueError: overlap ≥ half the text budget, or max_tokens too small.
    """

    def __init__(self, tokenizer, max_tokens: int = 256, overlap: int = 32):
        if max_tokens < 16:
            raise ValueError(f"max_tokens must be >= 16, got {max_tokens}")
        if not 0 <= overlap < max_tokens // 2:
            raise ValueError(f"overlap must be in [0, max_tokens/2), got {overlap} with max_tokens={max_tokens}")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.specials = tokenizer.num_special_tokens_to_add(pair=False)

    def count(self, text: str) -> int:
        """Word pieces of `text` including special tokens."""
        return len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def chunk(self, sections: list[Section]) -> list[Chunk]:
        """Passages of all `sections`, in order, positions numbered from 0."""
        out: list[Chunk] = []
        for sec in sections:
            heading = sec.heading
            head_cost = len(self.tokenizer(heading + "\n", add_special_tokens=False)["input_ids"]) if heading else 0
            if head_cost > self.max_tokens // 4:  # absurdly long heading: keep its tail
                heading = heading[-120:]
                head_cost = len(self.tokenizer(heading + "\n", add_special_tokens=False)["input_ids"])
            budget = self.max_tokens - self.specials - head_cost
            for text in self._split(sec.text, budget):
                out.append(Chunk(heading, text, len(out)))
        return out

    def _split(self, text: str, budget: int) -> list[str]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
        offsets = enc["offset_mapping"]
        n = len(offsets)
        if n <= budget:
            return [text.strip()] if text.strip() else []
        # candidate cut points: token index i where a new word starts; score by what precedes it
        def score(i: int) -> int:
            gap = text[offsets[i - 1][1]:offsets[i][0]]
            if "\n\n" in gap or ("\n" in gap and text[offsets[i][0]:offsets[i][0] + 1] in "-*0123456789"):
                return 3
            if "\n" in gap or (gap and text[offsets[i - 1][1] - 1:offsets[i - 1][1]] in ".!?:;"):
                return 2
            return 1 if gap else 0  # 0: inside a word, never cut there unless forced

        pieces: list[str] = []
        start = 0
        while start < n:
            end = min(start + budget, n)
            if end < n:
                lo = start + max(1, budget // 2)
                best, best_s = end, -1
                for i in range(end, lo - 1, -1):
                    s = score(i)
                    if s > best_s:
                        best, best_s = i, s
                        if s == 3:
                            break
                end = best
            piece = text[offsets[start][0]:offsets[end - 1][1]].strip()
            if piece:
                pieces.append(piece)
            if end >= n:
                break
            nxt = max(end - self.overlap, start + 1)
            while nxt < end and score(nxt) == 0:  # start the overlap on a word
                nxt += 1
            start = nxt
        return pieces
