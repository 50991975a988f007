"""Checkable claims of a report fragment (R-8.4.2.4 consistency aids).

:func:`extract_claims` reads a linked fragment (Chinese, English or mixed) and returns what can be
compared with the linked region:

* **size** - ``1.5 cm``, ``15 mm``, ``1.5×1.2 cm``, ``1.5cm×1.2cm``, ``1.5 x 1.2 x 1.0 cm``,
  ``1.5厘米``, ``15毫米``, ``2公分``, ranges (``0.3-0.5 cm``, ``3～5mm``, ``3 to 5 mm``) and bounds
  (``<5 mm``, ``小于5mm``, ``不足5毫米``, ``>3 cm``) in millimetres. A number whose neighbours make
  it a distance (``距胸膜5mm``, ``5 mm from the pleura``), a thickness (``层厚1.25mm``,
  ``5 mm slices``) or a change (``较前增大约3mm``, ``increased by 3 mm``) is kept with that role
  and is not compared with the region's diameter;
* **laterality** - 左/右/双侧/两侧, left/right/bilateral/both (not in 左右径, 左心 ...);
* **location** - terms mapped to template codes (lung lobes, liver segments S1-S8 also written
  ``S5``, ``S5/S6段``, ``segment VII``, brain regions) or to a location attribute (thyroid
  ``lobe``); a location term that names a side (右肺上叶, right thyroid lobe) also claims that
  side. When one place is named in general and in detail (``肝S5段``), the general term is dropped;
* **enhancement** - none, present, mild, marked, solid, ring, arterial (hyperenhancement),
  washout, capsule; negations (未见明显强化, no enhancement) are matched before the words they
  contain.

The words come from ``Resources/vocabularies/report-terms.json`` (schema ``report-terms/v1``).
Offsets of claims are code points of the report (:mod:`.reports_text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from RTSSBridgeLib.resources import resources_dir

from .schemas import read_json, schema_problems

VOCABULARY_SCHEMA = "report-terms"
ASPECTS = ("size", "laterality", "location", "enhancement")
#: Millimetres per unit.
UNITS_MM = {"mm": 1.0, "cm": 10.0, "毫米": 1.0, "厘米": 10.0, "公分": 10.0}
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6, "VII": 7, "VIII": 8,
          "Ⅰ": 1, "Ⅱ": 2, "Ⅲ": 3, "Ⅳ": 4, "Ⅴ": 5, "Ⅵ": 6, "Ⅶ": 7, "Ⅷ": 8}


@dataclass(frozen=True)
class Claim:
    """A checkable statement of the text: ``text == report[start:end]``.

    ``value`` by aspect: size {``values_mm``, ``largest_mm``, ``qualifier`` (None, ``lt``, ``gt``,
    ``range``), ``unit``}; laterality ``left``/``right``/``bilateral``; location {``codes``,
    ``attribute``, ``side``}; enhancement: the class. ``role`` is ``claim``, or for a number that is
    not the region's size ``distance``/``thickness``/``change`` (not compared).
    """

    aspect: str
    text: str
    start: int
    end: int
    value: Any
    role: str = "claim"

    def to_dict(self) -> Dict[str, Any]:
        return {"aspect": self.aspect, "text": self.text, "span": [self.start, self.end], "value": self.value,
                "role": self.role}


@dataclass(frozen=True)
class _Term:
    text: str
    value: Any
    english: bool


@dataclass
class Vocabulary:
    """The report-terms resource, compiled."""

    data: Dict[str, Any]
    locations: List[_Term] = field(default_factory=list)
    laterality: List[_Term] = field(default_factory=list)
    not_laterality: List[_Term] = field(default_factory=list)
    enhancement: List[_Term] = field(default_factory=list)

    @property
    def enhancement_values(self) -> Dict[str, str]:
        return dict(self.data["enhancement_attribute_values"])

    def roi_name_location(self, name: str) -> Tuple[Optional[str], List[str]]:
        """(side, codes) of a seed 002 ROI name such as ``R_lat_temp`` or ``L_mid_cblm``."""
        spec = self.data["roi_name"]
        parts = [p for p in re.split(r"[_\s-]+", str(name)) if p]
        side = spec["sides"].get(parts[0].upper()) if parts else None
        codes: List[str] = []
        for part in parts[1:] if side else parts:
            code = spec["parts"].get(part.lower())
            if code and code not in codes:
                codes.append(code)
        return side, codes


def _terms(entries: Mapping[str, Sequence[str]], value: Any) -> List[_Term]:
    return [_Term(t, value, lang == "en") for lang in ("zh", "en") for t in entries.get(lang, [])]


@cache
def vocabulary() -> Vocabulary:
    """The built-in vocabulary (validated against its schema)."""
    path = resources_dir() / "vocabularies" / "report-terms.json"
    data = read_json(str(path))
    problems = schema_problems(VOCABULARY_SCHEMA, data)
    if problems:
        from RTSSBridgeLib.errors import InputError

        raise InputError(problems[0], file=str(path))
    vocab = Vocabulary(data)
    for entry in data["locations"]:
        value = {"codes": list(entry.get("codes", [])), "attribute": entry.get("attribute"), "side": entry.get("side")}
        vocab.locations += _terms(entry, value)
    for side, entries in data["laterality"].items():
        vocab.laterality += _terms(entries, side)
    vocab.not_laterality = _terms(data["not_laterality"], None)
    for entry in data["enhancement"]:
        vocab.enhancement += _terms(entry, entry["class"])
    return vocab


def _find_terms(text: str, lo: int, hi: int, terms: Sequence[_Term], taken: List[Tuple[int, int]]
                ) -> List[Tuple[int, int, _Term]]:
    """Non-overlapping matches of ``terms`` in ``text[lo:hi]``, longest first, outside ``taken``."""
    found: List[Tuple[int, int, _Term]] = []
    for term in sorted(terms, key=lambda t: -len(t.text)):
        if term.english:
            pattern = re.compile(r"(?<![A-Za-z])" + re.escape(term.text) + r"(?![A-Za-z])",
                                 0 if term.text.isupper() else re.IGNORECASE)
        else:
            pattern = re.compile(re.escape(term.text))
        for m in pattern.finditer(text, lo, hi):
            s, e = m.start(), m.end()
            if any(s < te and ts < e for ts, te in taken):
                continue
            taken.append((s, e))
            found.append((s, e, term))
    return sorted(found, key=lambda x: x[0])


# --------------------------------------------------------------------------- sizes
_NUM = r"(?:\d+(?:[.．]\d+)?|[.．]\d+)"
_UNIT = r"(?:cm|mm|厘米|毫米|公分)(?![A-Za-z0-9²³])"
_TOKEN = re.compile(rf"(?<![A-Za-z0-9.．])(?P<num>{_NUM})(?:\s*(?P<unit>{_UNIT}))?", re.IGNORECASE)
_DIM_SEP = re.compile(r"^\s*[×xX*＊✕✖]\s*$")
_RANGE_SEP = re.compile(r"^\s*(?:-|–|—|~|～|〜|至|到|to)\s*$", re.IGNORECASE)
_LESS = re.compile(r"(?:<=?|＜|≤|小于|不足|不超过|低于|less than|smaller than|under|up to|below)\s*"
                   r"(?:约|approximately|about|approx\.?)?\s*$", re.IGNORECASE)
_MORE = re.compile(r"(?:>=?|＞|≥|大于|超过|greater than|larger than|more than|over|above|exceeding)\s*"
                   r"(?:约|approximately|about|approx\.?)?\s*$", re.IGNORECASE)


def _number(text: str) -> float:
    return float(text.replace("．", "."))


def _role(text: str, lo: int, hi: int, start: int, end: int, vocab: Vocabulary) -> str:
    before = text[max(lo, start - 12):start].lower()
    after = text[end:min(hi, end + 16)].lower()
    for role, spec in vocab.data["size_roles"].items():
        words_before = spec["before"]["zh"] + spec["before"]["en"]
        for word in words_before:
            w = word.lower()
            if w in before and not re.search(r"[。；;,，]", before[before.rfind(w):]):
                return str(role)
        for word in spec["after"]["zh"]:
            if after.lstrip().startswith(word):
                return str(role)
        for word in spec["after"]["en"]:
            if re.match(r"\s*" + re.escape(word.lower()) + r"\b", after):
                return str(role)
    return "claim"


def _size_claims(text: str, lo: int, hi: int, vocab: Vocabulary) -> List[Claim]:
    tokens = list(_TOKEN.finditer(text, lo, hi))
    claims: List[Claim] = []
    n = 0
    while n < len(tokens):
        group = [tokens[n]]
        kind = "dims"
        while n + 1 < len(tokens):
            between = text[group[-1].end():tokens[n + 1].start()]
            if _DIM_SEP.match(between) and kind == "dims" and len(group) < 3:
                group.append(tokens[n + 1])
                n += 1
            elif _RANGE_SEP.match(between) and len(group) == 1:
                group.append(tokens[n + 1])
                kind = "range"
                n += 1
            else:
                break
        n += 1
        unit = group[-1].group("unit")
        if unit is None:
            continue
        values: List[float] = []
        current = unit
        for token in reversed(group):  # a unit written once applies to the numbers before it
            current = token.group("unit") or current
            values.insert(0, _number(token.group("num")) * UNITS_MM[current.lower()])
        start, end = group[0].start(), group[-1].end()
        qualifier: Optional[str] = "range" if kind == "range" else None
        before = text[max(lo, start - 16):start]
        m = _LESS.search(before) or _MORE.search(before)
        if m is not None and kind == "dims":
            qualifier = "lt" if _LESS.search(before) else "gt"
            start = max(lo, start - 16) + m.start()
        values = [round(v, 6) for v in values]
        claims.append(Claim("size", text[start:end], start, end,
                            {"values_mm": values, "largest_mm": max(values), "qualifier": qualifier,
                             "unit": unit.lower()},
                            _role(text, lo, hi, group[0].start(), group[-1].end(), vocab)))
    return claims


# --------------------------------------------------------------------------- locations
_SEGMENT_ZH = re.compile(r"(?:肝)?(?:S|s)\s*([1-8])(?:\s*[/、,，和及与]\s*(?:S|s)?\s*([1-8]))?(?:\s*[abAB])?\s*段?"
                         r"|([ⅠⅡⅢⅣⅤⅥⅦⅧ]|I{1,3}|IV|VI{0,3}|V)\s*段")
_SEGMENT_EN = re.compile(r"(?<![A-Za-z])(?:hepatic\s+)?segments?\s+([1-8]|VIII|VII|VI|IV|V|III|II|I)(?:[ab])?"
                         r"(?:\s*(?:/|and|,)\s*([1-8]|VIII|VII|VI|IV|V|III|II|I))?(?![A-Za-z0-9])", re.IGNORECASE)
_SEGMENT_TOKEN = re.compile(r"(?<![A-Za-z0-9])S([1-8])(?:/([1-8]))?(?![0-9])")


def _segment_number(token: Optional[str]) -> Optional[str]:
    if not token:
        return None
    return str(_ROMAN.get(token.upper(), _ROMAN.get(token, 0)) or token) if not token.isdigit() else token


def _location_claims(text: str, lo: int, hi: int, vocab: Vocabulary, taken: List[Tuple[int, int]]) -> List[Claim]:
    claims: List[Claim] = []
    codes = vocab.data["liver_segments"]["codes"]
    for pattern in (_SEGMENT_EN, _SEGMENT_ZH, _SEGMENT_TOKEN):
        for m in pattern.finditer(text, lo, hi):
            s, e = m.start(), m.end()
            if any(s < te and ts < e for ts, te in taken):
                continue
            numbers = [_segment_number(g) for g in m.groups() if g]
            found = [codes[x] for x in numbers if x in codes]
            if not found:
                continue
            taken.append((s, e))
            claims.append(Claim("location", text[s:e], s, e, {"codes": found, "attribute": None, "side": None}))
    for s, e, term in _find_terms(text, lo, hi, vocab.locations, taken):
        claims.append(Claim("location", text[s:e], s, e, dict(term.value)))
    return sorted(claims, key=lambda c: c.start)


def _drop_general_locations(claims: List[Claim], ancestors: Optional[Mapping[str, Sequence[str]]]) -> List[Claim]:
    """Drop a location whose codes are all ancestors of another location's codes (肝 + S5段)."""
    locations = [c for c in claims if c.aspect == "location" and c.value["codes"]]
    drop = set()
    for c in locations:
        for other in locations:
            if other is c:
                continue
            above: set = set()
            for code in other.value["codes"]:
                above.update(ancestors.get(code, ()) if ancestors is not None else _default_ancestors(code))
            if all(code in above for code in c.value["codes"]):
                drop.add(id(c))
    return [c for c in claims if id(c) not in drop]


def _default_ancestors(code: str) -> List[str]:
    """Ancestors known without a template (the built-in lung, liver and brain hierarchies)."""
    if code.startswith("LIVER_S"):
        return ["LIVER"]
    if code.startswith("LUNG_LEFT_"):
        return ["LUNG_LEFT"]
    if code.startswith("LUNG_RIGHT_"):
        return ["LUNG_RIGHT"]
    if code.startswith("BRAIN_") or code in ("CEREBELLUM", "BRAINSTEM", "BASAL_GANGLIA"):
        return ["BRAIN"]
    return []


# --------------------------------------------------------------------------- laterality, enhancement
def _laterality_claims(text: str, lo: int, hi: int, vocab: Vocabulary, taken: List[Tuple[int, int]]) -> List[Claim]:
    _find_terms(text, lo, hi, vocab.not_laterality, taken)  # 左右径, 左心: taken, never a claim
    return [Claim("laterality", text[s:e], s, e, term.value)
            for s, e, term in _find_terms(text, lo, hi, vocab.laterality, taken)]


def _enhancement_claims(text: str, lo: int, hi: int, vocab: Vocabulary, taken: List[Tuple[int, int]]) -> List[Claim]:
    return [Claim("enhancement", text[s:e], s, e, term.value)
            for s, e, term in _find_terms(text, lo, hi, vocab.enhancement, taken)]


def extract_claims(text: str, start: int = 0, end: Optional[int] = None,
                   ancestors: Optional[Mapping[str, Sequence[str]]] = None) -> List[Claim]:
    """Every claim in ``text[start:end]``, in text order (offsets are positions in ``text``).

    ``ancestors`` (code -> its ancestor codes, from the template) decides which of two location
    terms is the general one; without it the built-in hierarchies are used.
    """
    vocab = vocabulary()
    hi = len(text) if end is None else end
    sizes = _size_claims(text, start, hi, vocab)
    taken: List[Tuple[int, int]] = [(c.start, c.end) for c in sizes]
    enhancement = _enhancement_claims(text, start, hi, vocab, taken)
    locations = _location_claims(text, start, hi, vocab, taken)
    laterality = _laterality_claims(text, start, hi, vocab, taken)
    claims = sorted(sizes + enhancement + locations + laterality, key=lambda c: (c.start, c.end))
    return _drop_general_locations(claims, ancestors)
