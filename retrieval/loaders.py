"""Document loaders: a file → its sections (heading, text), markup removed.

Supported: ``.md``/``.markdown`` (ATX and setext headings), ``.rst``/``.rst.txt``
(underlined and overlined headings; directive and comment lines dropped, roles kept as their
text), ``.txt`` (one section), ``.html``/``.htm`` (h1–h6 headings; script/style dropped).

Contract: `load_file(path)` → list of `Section`; raises `UnsupportedFormatError` (ValueError)
for other suffixes. Text is decoded as UTF-8 with replacement, so no file fails on bytes.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

SUFFIXES = (".md", ".markdown", ".rst", ".rst.txt", ".txt", ".html", ".htm")


class UnsupportedFormatError(ValueError):
    """The file's suffix has no loader."""


@dataclass
class Section:
    """A run of text under one heading. `heading` is the path of headings, joined by " > "."""

    heading: str
    text: str


def is_supported(path: str | Path) -> bool:
    """True when `path` has a suffix `load_file` reads."""
    return str(path).lower().endswith(SUFFIXES)


def load_file(path: str | Path) -> list[Section]:
    """Read `path` and split it into sections by its headings (empty sections dropped)."""
    p = Path(path)
    name = p.name.lower()
    raw = p.read_bytes().decode("utf-8", errors="replace")
    if name.endswith((".rst", ".rst.txt")):
        sections = parse_rst(raw)
    elif name.endswith((".md", ".markdown")):
        sections = parse_markdown(raw)
    elif name.endswith((".html", ".htm")):
        sections = parse_html(raw)
    elif name.endswith(".txt"):
        sections = [Section("", raw)]
    else:
        raise UnsupportedFormatError(f"unsupported file type: {p.name} (supported: {', '.join(SUFFIXES)})")
    return [Section(s.heading, s.text.strip()) for s in sections if s.text.strip()]


class _Outline:
    """Collects sections while tracking the heading path by level."""

    def __init__(self) -> None:
        self.path: list[tuple[int, str]] = []
        self.sections: list[Section] = []
        self.lines: list[str] = []

    def heading(self, level: int, title: str) -> None:
        self.flush()
        self.path = [(lv, t) for lv, t in self.path if lv < level] + [(level, title.strip())]

    def flush(self) -> None:
        if self.lines:
            self.sections.append(Section(" > ".join(t for _, t in self.path), "\n".join(self.lines)))
        self.lines = []


_RST_ADORN = re.compile(r"^([=\-~^\"'`#*+:.<>_])\1{2,}\s*$")
_RST_ROLE = re.compile(r":[\w:+-]+:`([^`<]*?)(?:\s*<[^>]*>)?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_{1,2}")
_RST_DIRECTIVE = re.compile(r"^\s*\.\.\s+([\w:-]+)::\s*(.*)$")


def _rst_inline(line: str) -> str:
    line = _RST_ROLE.sub(lambda m: m.group(1).lstrip("~!"), line)
    line = _RST_LINK.sub(r"\1", line)
    line = line.replace("``", "").replace("**", "").replace("|", " ").rstrip()
    indent = len(line) - len(line.lstrip())
    return " " * min(indent, 8) + " ".join(line.split())


def parse_rst(text: str) -> list[Section]:
    """Split reStructuredText into sections. Heading levels follow the order in which
    adornment styles first appear, as docutils does."""
    out = _Outline()
    styles: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        # overline + title + underline
        if _RST_ADORN.match(line) and i + 2 < len(lines) and _RST_ADORN.match(lines[i + 2]) and lines[i + 1].strip():
            style = "o" + line.strip()[0]
            if style not in styles:
                styles.append(style)
            out.heading(styles.index(style), _rst_inline(lines[i + 1].strip()))
            i += 3
            continue
        if line.strip() and not line.startswith(" ") and _RST_ADORN.match(nxt) and len(nxt.strip()) >= len(line.strip()) - 1:
            style = "u" + nxt.strip()[0]
            if style not in styles:
                styles.append(style)
            out.heading(styles.index(style), _rst_inline(line.strip()))
            i += 2
            continue
        m = _RST_DIRECTIVE.match(line)
        if m:
            kind, arg = m.group(1), m.group(2).strip()
            # keep what a reader sees: signatures of API entries, notes' first line
            if kind.split(":")[-1] in {"function", "method", "class", "attribute", "data", "exception",
                                       "module", "decorator", "opcode", "describe", "envvar", "option"}:
                # an API entry is a sub-section of its own, below every titled level
                out.heading(100, _rst_inline(arg))
                out.lines.append(_rst_inline(arg))
            elif kind in {"note", "warning", "versionadded", "versionchanged", "deprecated", "seealso"} and arg:
                out.lines.append(f"{kind.capitalize()}: {_rst_inline(arg)}")
            i += 1
            # skip the directive's option lines (":maxdepth: 2")
            while i < len(lines) and re.match(r"^\s+:[\w-]+:", lines[i]):
                i += 1
            continue
        if line.startswith("..") and not line.startswith("..."):  # comment / target
            i += 1
            while i < len(lines) and lines[i].startswith("   ") and lines[i].strip():
                i += 1
            continue
        if _RST_ADORN.match(line) or re.match(r"^\+[-=+]+\+$", line.strip()):
            i += 1
            continue
        out.lines.append(_rst_inline(line))
        i += 1
    out.flush()
    return out.sections


_MD_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def parse_markdown(text: str) -> list[Section]:
    """Split Markdown into sections by ATX (``#``) and setext (``===``/``---``) headings;
    fenced code is kept as text and never read as headings."""
    out = _Outline()
    lines = text.splitlines()
    fence = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            out.lines.append(line)
            continue
        m = None if fence else _MD_ATX.match(line)
        if m:
            out.heading(len(m.group(1)), m.group(2))
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not fence and line.strip() and re.match(r"^(=+|-+)\s*$", nxt) and not re.match(r"^(=+|-+)\s*$", line):
            out.heading(1 if nxt.startswith("=") else 2, line.strip())
            continue
        if not fence and re.match(r"^(=+|-+)\s*$", line) and i > 0 and lines[i - 1].strip():
            continue
        out.lines.append(line)
    out.flush()
    return out.sections


class _HTMLSections(HTMLParser):
    BLOCK = {"p", "div", "li", "tr", "br", "pre", "section", "article", "table", "dd", "dt", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = _Outline()
        self.skip = 0
        self.level = 0
        self.title: list[str] = []
        self.buf: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._para()
            self.level = int(tag[1])
        elif tag in self.BLOCK:
            self._para()

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self.level:
            self.out.heading(self.level, " ".join("".join(self.title).split()).rstrip("¶ "))
            self.level, self.title = 0, []
        elif tag in self.BLOCK:
            self._para()

    def handle_data(self, data):
        if self.skip:
            return
        (self.title if self.level else self.buf).append(data)

    def _para(self):
        text = " ".join("".join(self.buf).split())
        if text:
            self.out.lines.append(text)
        self.buf = []


def parse_html(text: str) -> list[Section]:
    """Split HTML into sections by h1–h6; tags removed, entities decoded."""
    p = _HTMLSections()
    p.feed(text)
    p.close()
    p._para()
    p.out.flush()
    return [Section(html.unescape(s.heading), s.text) for s in p.out.sections]
