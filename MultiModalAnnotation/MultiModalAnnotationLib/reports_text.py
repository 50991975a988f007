"""Report text model (R-8.4.2.3): reports, sentences and fragments addressed by code-point offsets.

Offsets
-------
Every offset in this package counts **Unicode code points** of the report text, which is what a
Python ``str`` index is: ``report.text[start:end]`` is the fragment, ``end`` exclusive. A character
outside the Basic Multilingual Plane (``𠮷`` U+20BB7, an emoji) is one code point although UTF-16
(Qt, JavaScript) stores it as two units; a base letter with a combining mark (``e`` + U+0301) is two
code points although it shows as one character. :func:`utf16_to_code_point` and
:func:`code_point_to_utf16` convert the positions of a Qt text cursor; :func:`check_span` refuses a
span that would separate a combining mark from its base.

Sentences
---------
:func:`split_sentences` cuts Chinese, English and mixed text at 。！？； and . ! ? ; and at line
breaks, and keeps together what is not a sentence end:

* decimals and numbers (``1.5 cm``, ``.5``, ``1．5``), dotted abbreviations and tokens (``e.g.``,
  ``i.e.``, ``U.S.``, ``www.x.cn``) - a full stop followed directly by a letter or digit never ends a
  sentence;
* known abbreviations (:data:`ABBREVIATIONS`: ``Dr.``, ``approx.``, ``vs.``, ``No. 3``, ``Fig. 2``,
  ``et al.`` ...);
* list numbers at the start of a sentence or after a colon (``1.``, ``2)``, ``①``, ``一、``, ``a.``);
* a full stop followed by a lower-case word (an unlisted abbreviation such as ``sl. enlarged``);
* everything inside brackets (``（S7；约1.2 cm）`` stays one piece);

while units at a sentence end (``... 15 mm. No effusion.``) end it as usual. Closing quotes and
brackets after a sentence end, and repeated marks (``?!``, ``。。``), belong to the sentence. A
sentence's ``start``/``end`` exclude surrounding white space (also the ideographic space U+3000).
The splitter is hand-written: libraries such as pysbd choose one language per text and return
no offsets for mixed Chinese/English reports, which are the common case here.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from RTSSBridgeLib.errors import InputError

#: What offsets count (stated in every JSON form that carries offsets).
OFFSET_UNIT = "unicode_code_points"
#: Code points of context kept before and after a quoted fragment (for re-anchoring).
CONTEXT_LENGTH = 32

#: Always a sentence end (full-width and ASCII): 。！？； ! ? ;  (a full stop is decided by rules).
_ALWAYS_END = set("。！？；!?;｡")
_FULL_STOPS = set(".．")
_CLOSERS = set("”’\"'）)】]」』》〉")
_OPENERS = {"(": ")", "（": "）", "[": "]", "【": "】", "「": "」", "『": "』", "《": "》", "〈": "〉"}
_CLOSE_BRACKETS = set(_OPENERS.values())
_LINE_BREAKS = set("\n\r\u2028\u2029\x0b\x0c\x85")
_SPACE = set(" \t\u3000\u00a0\u2002\u2003\u2009")

#: Words that take a full stop without ending the sentence (compared case-insensitively, without the dot).
ABBREVIATIONS = frozenset({
    "dr", "drs", "mr", "mrs", "ms", "prof", "st", "vs", "approx", "appr", "e.g", "i.e", "cf", "fig", "figs",
    "ca", "incl", "resp", "al", "etc", "viz", "esp", "est", "ref", "vol", "nos", "lt", "rt", "pt", "pts", "hx",
    "dx", "sx", "tx", "rx", "a.m", "p.m", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "max", "min", "avg", "ant", "post", "sup", "inf", "med", "lat",
})
#: Abbreviations that take a full stop only before a number (``No. 3``, ``Nr. 2``).
NUMBER_ABBREVIATIONS = frozenset({"no", "nr", "nos", "fig", "figs", "p", "pp", "vol", "ser", "img", "im"})
_ROMAN = re.compile(r"^(?:[IVX]{1,4}|[ivx]{1,4})$")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def _is_cjk(ch: str) -> bool:
    return bool(_CJK.match(ch))


@dataclass(frozen=True)
class Sentence:
    """One sentence: ``text == report_text[start:end]`` (code points, ``end`` exclusive)."""

    index: int
    start: int
    end: int
    text: str

    def to_dict(self) -> Dict[str, Any]:
        return {"index": self.index, "start": self.start, "end": self.end, "text": self.text}


def sha256_text(text: str) -> str:
    """SHA-256 of the UTF-8 bytes of ``text`` (the report's identity; the one place for it)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def detect_language(text: str) -> str:
    """``zh``, ``en`` or ``mixed`` from the share of CJK characters among the letters."""
    cjk = sum(1 for ch in text if _is_cjk(ch))
    latin = len(re.findall(r"[A-Za-z]{2,}", text))
    if cjk and latin:
        # a few Latin tokens (CT, TI-RADS, mm) in a Chinese report do not make it mixed
        words = len(re.findall(r"[A-Za-z]+", text))
        return "mixed" if words >= 0.25 * cjk else "zh"
    return "zh" if cjk else "en"


# --------------------------------------------------------------------------- splitting
def _previous_token(text: str, dot: int) -> str:
    """The run of letters, digits and inner dots just before position ``dot``."""
    n = dot
    while n > 0 and (text[n - 1].isalnum() or text[n - 1] == ".") and not _is_cjk(text[n - 1]):
        n -= 1
    return text[n:dot]


def _token_start(text: str, dot: int) -> int:
    n = dot
    while n > 0 and (text[n - 1].isalnum() or text[n - 1] == ".") and not _is_cjk(text[n - 1]):
        n -= 1
    return n


def _next_visible(text: str, pos: int) -> int:
    """Index of the first character at or after ``pos`` that is not a space (len(text) if none)."""
    while pos < len(text) and text[pos] in _SPACE:
        pos += 1
    return pos


def _is_list_marker(text: str, dot: int, sentence_start: int) -> bool:
    """``1.`` / ``a.`` / ``IV.`` at the start of a sentence or after a colon, dash or comma."""
    token = _previous_token(text, dot)
    if not token or "." in token:
        return False
    if not (token.isdigit() and len(token) <= 2) and not (len(token) == 1 and token.isalpha()) \
            and not _ROMAN.match(token):
        return False
    before = _token_start(text, dot) - 1
    while before >= sentence_start and text[before] in _SPACE:
        before -= 1
    return before < sentence_start or text[before] in ":：,，、-—(（"


def _full_stop_ends_sentence(text: str, dot: int, sentence_start: int) -> bool:
    after = text[dot + 1] if dot + 1 < len(text) else ""
    if after and after.isalnum() and not _is_cjk(after):
        return False  # 1.5, １．５ (full width), e.g., U.S., www.x.cn, No.3
    if after and after in _FULL_STOPS:
        return False  # an ellipsis "..." ends (or not) at its last dot
    token = _previous_token(text, dot).lower()
    nxt = _next_visible(text, dot + 1)
    following = text[nxt] if nxt < len(text) else ""
    if token in ABBREVIATIONS:
        return False
    if token in NUMBER_ABBREVIATIONS and (following.isdigit() or following == "#"):
        return False
    if _is_list_marker(text, dot, sentence_start):
        return False
    # "sl. enlarged": a lower-case word after the dot is an unlisted abbreviation, not a sentence start
    return not (following and following.isascii() and following.islower())


def split_sentences(text: str) -> List[Sentence]:
    """Sentences of ``text`` with code-point offsets (see the module docstring for the rules)."""
    sentences: List[Sentence] = []
    n = len(text)
    start: Optional[int] = None
    depth: List[str] = []
    i = 0

    def close(end: int) -> None:
        nonlocal start
        if start is None:
            return
        stop = end
        while stop > start and (text[stop - 1] in _SPACE or text[stop - 1] in _LINE_BREAKS):
            stop -= 1
        if stop > start:
            sentences.append(Sentence(len(sentences), start, stop, text[start:stop]))
        start = None

    while i < n:
        ch = text[i]
        if ch in _LINE_BREAKS:
            close(i)
            depth.clear()
            i += 1
            continue
        if start is None:
            if ch in _SPACE:
                i += 1
                continue
            start = i
        if ch in _OPENERS:
            depth.append(_OPENERS[ch])
        elif ch in _CLOSE_BRACKETS and depth:
            if depth[-1] == ch:
                depth.pop()
            elif ch in depth:
                while depth and depth.pop() != ch:
                    pass
        ends = False
        if not depth:
            if ch in _ALWAYS_END:
                ends = True
            elif ch in _FULL_STOPS:
                ends = _full_stop_ends_sentence(text, i, start)
        if ends:
            j = i + 1
            while j < n and (text[j] in _ALWAYS_END or text[j] in _FULL_STOPS or text[j] in _CLOSERS):
                if text[j] in _CLOSERS and text[j] in "\"'" and j + 1 < n and text[j + 1].isalnum():
                    break  # an opening quote of the next sentence
                j += 1
            close(j)
            i = j
            continue
        i += 1
    close(n)
    return sentences


# --------------------------------------------------------------------------- offsets
def utf16_to_code_point(text: str, utf16_offset: int) -> int:
    """Code-point offset of a UTF-16 offset (a Qt ``QTextCursor`` position) in ``text``."""
    if utf16_offset < 0:
        raise InputError(f"{utf16_offset} is negative", field="offset")
    units = 0
    for index, ch in enumerate(text):
        if units >= utf16_offset:
            if units > utf16_offset:
                raise InputError(f"UTF-16 offset {utf16_offset} falls inside the surrogate pair of "
                                 f"U+{ord(text[index - 1]):X}", field="offset")
            return index
        units += 2 if ord(ch) > 0xFFFF else 1
    if units == utf16_offset:
        return len(text)
    if units > utf16_offset:
        raise InputError(f"UTF-16 offset {utf16_offset} falls inside the surrogate pair of U+{ord(text[-1]):X}",
                         field="offset")
    raise InputError(f"UTF-16 offset {utf16_offset} is beyond the text ({units} UTF-16 units)", field="offset")


def code_point_to_utf16(text: str, offset: int) -> int:
    """UTF-16 offset (for Qt) of a code-point offset in ``text``."""
    if not 0 <= offset <= len(text):
        raise InputError(f"{offset} is outside 0..{len(text)}", field="offset")
    return offset + sum(1 for ch in text[:offset] if ord(ch) > 0xFFFF)


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch).startswith("M")


def check_span(text: str, start: int, end: int) -> None:
    """Raise :class:`InputError` unless ``0 <= start < end <= len(text)`` and neither end separates a
    combining mark from the character it belongs to."""
    if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool) or isinstance(end, bool):
        raise InputError(f"start {start!r} and end {end!r} must be integers (code points)", field="span")
    if not 0 <= start < end <= len(text):
        raise InputError(f"span {start}..{end} is not inside the text (0..{len(text)} code points) or is empty; "
                         "rule: 0 <= start < end <= length", field="span")
    for where, pos in (("start", start), ("end", end)):
        if pos < len(text) and _is_mark(text[pos]):
            raise InputError(f"{where} {pos} separates the combining mark U+{ord(text[pos]):04X} from its base "
                             "character; rule: a span holds whole characters", field="span")


def sentence_index_at(sentences: List[Sentence], offset: int) -> Optional[int]:
    """Index of the sentence holding code point ``offset`` (the next one when it is between two)."""
    for s in sentences:
        if offset < s.end:
            return s.index
    return None


# --------------------------------------------------------------------------- report
@dataclass(frozen=True)
class Report:
    """A report (or report section) with its text, language and SHA-256 (R-8.4.2).

    ``id`` is unique within a document; ``language`` is ``zh``, ``en`` or ``mixed`` (detected when
    empty); ``title`` says which part of which report it is (never a patient identifier).
    """

    id: str
    text: str
    language: str = ""
    title: str = ""

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$", str(self.id)):
            raise InputError(f"{self.id!r} is not a valid id (letters, digits, _ . : -)", field="report.id")
        if not isinstance(self.text, str) or not self.text.strip():
            raise InputError(f"report {self.id}: the text is empty", field="report.text")
        if not self.language:
            object.__setattr__(self, "language", detect_language(self.text))
        if self.language not in ("zh", "en", "mixed"):
            raise InputError(f"report {self.id}: language {self.language!r} is not zh, en or mixed",
                             field="report.language")

    @property
    def sha256(self) -> str:
        return sha256_text(self.text)

    def sentences(self) -> List[Sentence]:
        return split_sentences(self.text)

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"id": self.id, "language": self.language, "text": self.text,
                                "sha256": self.sha256, "offset_unit": OFFSET_UNIT}
        if self.title:
            data["title"] = self.title
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        report = cls(str(data["id"]), str(data["text"]), str(data.get("language", "")), str(data.get("title", "")))
        if "sha256" in data and data["sha256"] != report.sha256:
            raise InputError(f"report {report.id}: sha256 {data['sha256']} is not the SHA-256 of its text "
                             f"({report.sha256}); the text was changed without re-anchoring its links "
                             "(use update_report_text)", field="report.sha256")
        return report


# --------------------------------------------------------------------------- anchoring
@dataclass(frozen=True)
class Anchor:
    """Where a fragment is: code points ``start``..``end`` of the text, the quoted text and up to
    :data:`CONTEXT_LENGTH` code points of context on each side (W3C Web Annotation
    TextPositionSelector + TextQuoteSelector)."""

    start: int
    end: int
    quote: str
    prefix: str
    suffix: str


def make_anchor(text: str, start: int, end: int) -> Anchor:
    check_span(text, start, end)
    return Anchor(start, end, text[start:end], text[max(0, start - CONTEXT_LENGTH):start],
                  text[end:end + CONTEXT_LENGTH])


@dataclass(frozen=True)
class Reanchoring:
    """Result of looking for an anchor in a changed text: ``state`` is ``anchored`` (same place),
    ``moved`` (found again elsewhere: ``anchor`` is the new place) or ``stale`` (not found, or found
    several times with nothing to choose between them: ``anchor`` is the old one, unchanged)."""

    state: str
    anchor: Anchor
    note: str


def _common_suffix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def reanchor(anchor: Anchor, new_text: str) -> Reanchoring:
    """Find ``anchor``'s quoted text in ``new_text`` (exact code points; never fuzzy).

    Every occurrence is scored by how much of the old context surrounds it; the best one wins,
    ties go to the occurrence at the old place. Several equally good occurrences away from the old
    place, or none at all, make the anchor stale: its offsets are kept as they were and the caller
    must not use them as if they still pointed at the quote.
    """
    quote = anchor.quote
    found: List[int] = []
    pos = new_text.find(quote) if quote else -1
    while pos >= 0:  # overlapping occurrences too ("aa" in "aaa")
        found.append(pos)
        pos = new_text.find(quote, pos + 1)
    if not found:
        return Reanchoring("stale", anchor, f"the quoted text is no longer in the report; offsets "
                                            f"{anchor.start}..{anchor.end} kept as they were")
    scores = {}
    for pos in found:
        if pos > 0 and pos < len(new_text) and _is_mark(new_text[pos]):
            continue
        end = pos + len(quote)
        if end < len(new_text) and _is_mark(new_text[end]):
            continue  # the quote continues into a combining mark: another character there
        before = new_text[max(0, pos - CONTEXT_LENGTH):pos]
        after = new_text[end:end + CONTEXT_LENGTH]
        scores[pos] = _common_suffix(before, anchor.prefix) + _common_prefix(after, anchor.suffix)
    if not scores:
        return Reanchoring("stale", anchor, "the quoted text is only found as part of other characters")
    best = max(scores.values())
    winners = [p for p, s in scores.items() if s == best]
    if anchor.start in winners:
        chosen = anchor.start
    elif len(winners) == 1:
        chosen = winners[0]
    else:
        return Reanchoring("stale", anchor, f"the quoted text occurs {len(winners)} times with the same context; "
                                            "a person must choose the place")
    new = make_anchor(new_text, chosen, chosen + len(quote))
    if chosen == anchor.start:
        return Reanchoring("anchored", new, "")
    return Reanchoring("moved", new, f"moved from {anchor.start}..{anchor.end} to {new.start}..{new.end} after the "
                                     "report text changed")
