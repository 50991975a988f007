"""Image-text links (R-8.4.2.2 - 8.4.2.5): report fragments bound to annotated regions.

A document keeps its reports and links in the ``report_links`` section (schema
``report-links/v1``)::

    "report_links": {
      "offset_unit": "unicode_code_points",
      "reports": [{"id": "RPT_CT", "language": "zh", "text": "...", "sha256": "..."}],
      "links": [{
        "id": "TXT_SPAN_01",
        "text": {"report_id": "RPT_CT", "start": 0, "end": 21, "quote": "...", "prefix": "", "suffix": "...",
                 "sentence_index": 0, "level": "sentence"},
        "target": {"annotation_id": "NODULE_01", "kind": "segment"},
        "semantic_type": "finding",
        "consistency": {"state": "inconsistent", "note": "...", "source": "automatic", "checks": [...]},
        "anchor": {"state": "anchored", "note": ""},
        "created": {"time": "...", "actor": "A01"}}]}

Each link is mirrored in its target annotation's ``cross_modal_links`` as the Appendix C typed
reference ``{"target": "TXT_SPAN_01", "kind": "text", "relation": "finding", "consistency": ...}``
(C.5's ``"cross_modal_links": ["TXT_SPAN_01"]`` form); the section is the authority and
:func:`with_report_links` keeps the mirror in step. Offsets are Unicode code points
(:mod:`.reports_text`). When a report's text changes, :func:`update_report_text` re-anchors every
link: found again -> ``moved`` with a note, not found -> ``stale`` (offsets untouched), never shifted
silently. An ``inconsistent`` link becomes a QC finding (:func:`link_findings`, rule
``TEXT_LINK_CONSISTENCY`` of :mod:`QCMetricsLib.rules`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from RTSSBridgeLib.errors import InputError

from .documents import Annotation, AnnotationDocument, now_utc
from .reports_text import OFFSET_UNIT, Anchor, Report, make_anchor, reanchor, sentence_index_at, split_sentences

SCHEMA = "report-links"
SEMANTIC_TYPES = ("finding", "diagnosis", "attribute", "recommendation")
#: Display names of the semantic types (8.4.2.2: 征象、诊断、属性描述、建议).
SEMANTIC_TYPE_NAMES = {"finding": ("finding / sign", "征象"), "diagnosis": ("diagnosis", "诊断"),
                       "attribute": ("attribute description", "属性描述"), "recommendation": ("recommendation", "建议")}
STATES = ("consistent", "inconsistent", "unchecked")
ANCHOR_STATES = ("anchored", "moved", "stale")
SOURCES = ("automatic", "person")
#: Annotation type -> what the link target is called in the panel (segment, markup, box, polygon).
TARGET_KINDS = {"mask": "segment", "point": "markup", "bbox": "box", "polygon": "polygon", "attribute": "attribute"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True)
class TextReference:
    """The linked fragment: report, code-point span, quoted text with context, sentence."""

    report_id: str
    start: int
    end: int
    quote: str
    prefix: str = ""
    suffix: str = ""
    sentence_index: int = 0
    level: str = "fragment"

    @property
    def anchor(self) -> Anchor:
        return Anchor(self.start, self.end, self.quote, self.prefix, self.suffix)

    def to_dict(self) -> Dict[str, Any]:
        return {"report_id": self.report_id, "start": self.start, "end": self.end, "quote": self.quote,
                "prefix": self.prefix, "suffix": self.suffix, "sentence_index": self.sentence_index,
                "level": self.level}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextReference:
        return cls(str(data["report_id"]), int(data["start"]), int(data["end"]), str(data["quote"]),
                   str(data.get("prefix", "")), str(data.get("suffix", "")), int(data.get("sentence_index", 0)),
                   str(data.get("level", "fragment")))


@dataclass(frozen=True)
class Consistency:
    """The consistency state of a link (8.4.2.4) and why: ``source`` ``automatic`` is a proposal of
    the consistency aids for a person to confirm; ``person`` is a person's decision (``by``)."""

    state: str = "unchecked"
    note: str = ""
    source: str = "automatic"
    checks: Tuple[Mapping[str, Any], ...] = ()
    region: Optional[Mapping[str, Any]] = None
    by: str = ""
    time: str = ""

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise InputError(f"{self.state!r} is not one of {', '.join(STATES)}", field="consistency.state")
        if self.source not in SOURCES:
            raise InputError(f"{self.source!r} is not one of {', '.join(SOURCES)}", field="consistency.source")

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"state": self.state, "note": self.note, "source": self.source,
                                "checks": [copy.deepcopy(dict(c)) for c in self.checks]}
        if self.region is not None:
            data["region"] = copy.deepcopy(dict(self.region))
        if self.by:
            data["by"] = self.by
        if self.time:
            data["time"] = self.time
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Consistency:
        return cls(str(data.get("state", "unchecked")), str(data.get("note", "")), str(data.get("source", "automatic")),
                   tuple(copy.deepcopy(dict(c)) for c in data.get("checks", [])),
                   copy.deepcopy(dict(data["region"])) if data.get("region") is not None else None,
                   str(data.get("by", "")), str(data.get("time", "")))


@dataclass(frozen=True)
class TextLink:
    """One link between a report fragment and an annotation (8.4.2.2)."""

    id: str
    text: TextReference
    target: str
    target_kind: str
    semantic_type: str
    consistency: Consistency = field(default_factory=Consistency)
    anchor_state: str = "anchored"
    anchor_note: str = ""
    created_time: str = ""
    created_by: str = ""

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise InputError(f"{self.id!r} is not a valid id", field="link.id")
        if self.semantic_type not in SEMANTIC_TYPES:
            raise InputError(f"{self.semantic_type!r} is not one of {', '.join(SEMANTIC_TYPES)}",
                             field="link.semantic_type")
        if self.anchor_state not in ANCHOR_STATES:
            raise InputError(f"{self.anchor_state!r} is not one of {', '.join(ANCHOR_STATES)}", field="link.anchor")

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"id": self.id, "text": self.text.to_dict(),
                                "target": {"annotation_id": self.target, "kind": self.target_kind},
                                "semantic_type": self.semantic_type, "consistency": self.consistency.to_dict(),
                                "anchor": {"state": self.anchor_state, "note": self.anchor_note}}
        if self.created_time or self.created_by:
            data["created"] = {"time": self.created_time, "actor": self.created_by or "unknown"}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextLink:
        created = data.get("created", {})
        anchor = data.get("anchor", {})
        return cls(str(data["id"]), TextReference.from_dict(data["text"]), str(data["target"]["annotation_id"]),
                   str(data["target"].get("kind", "segment")), str(data["semantic_type"]),
                   Consistency.from_dict(data.get("consistency", {})), str(anchor.get("state", "anchored")),
                   str(anchor.get("note", "")), str(created.get("time", "")), str(created.get("actor", "")))

    def mirror(self) -> Dict[str, Any]:
        """The Appendix C typed reference the target annotation carries."""
        return {"target": self.id, "kind": "text", "relation": self.semantic_type,
                "consistency": self.consistency.state}


@dataclass(frozen=True)
class ReportLinks:
    """The ``report_links`` section: reports and links."""

    reports: Tuple[Report, ...] = ()
    links: Tuple[TextLink, ...] = ()

    def report(self, report_id: str) -> Report:
        for r in self.reports:
            if r.id == report_id:
                return r
        raise InputError(f"no report {report_id!r} (reports: {', '.join(r.id for r in self.reports) or 'none'})",
                         field="report_links.reports")

    def link(self, link_id: str) -> TextLink:
        for item in self.links:
            if item.id == link_id:
                return item
        raise InputError(f"no link {link_id!r}", field="report_links.links")

    def links_of(self, annotation_id: str) -> List[TextLink]:
        return [item for item in self.links if item.target == annotation_id]

    def to_dict(self) -> Dict[str, Any]:
        return {"offset_unit": OFFSET_UNIT, "reports": [r.to_dict() for r in self.reports],
                "links": [item.to_dict() for item in self.links]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReportLinks:
        return cls(tuple(Report.from_dict(r) for r in data.get("reports", [])),
                   tuple(TextLink.from_dict(item) for item in data.get("links", [])))


# --------------------------------------------------------------------------- checks
def report_links_problems(data: Mapping[str, Any], annotations: Sequence[Mapping[str, Any]]) -> List[str]:
    """Rules the schema cannot state (one line each): unique ids, reports' SHA-256, spans inside
    the text and quoting it (unless stale), sentence index, targets exist and mirror the link."""
    problems: List[str] = []
    reports: Dict[str, Report] = {}
    for n, raw in enumerate(data.get("reports", [])):
        at = f"report_links.reports[{n}]"
        if raw["id"] in reports:
            problems.append(f"{at}.id: duplicate report id {raw['id']}")
            continue
        try:
            reports[raw["id"]] = Report.from_dict(raw)
        except InputError as exc:
            problems.append(f"{at}.{(exc.field or 'text').split('.')[-1]}: {exc.rule}")
    by_id = {a["id"]: a for a in annotations}
    seen: Dict[str, int] = {}
    sentences: Dict[str, Any] = {}
    for n, raw in enumerate(data.get("links", [])):
        at = f"report_links.links[{n}] ({raw['id']})"
        if raw["id"] in seen:
            problems.append(f"{at}.id: duplicate link id (also links[{seen[raw['id']]}])")
        seen.setdefault(raw["id"], n)
        if raw["id"] in by_id:
            problems.append(f"{at}.id: {raw['id']} is also an annotation id; rule: link ids are unique in the document")
        text = raw["text"]
        report = reports.get(text["report_id"])
        if report is None:
            problems.append(f"{at}.text.report_id: no report {text['report_id']}")
        else:
            stale = raw.get("anchor", {}).get("state") == "stale"
            if not 0 <= text["start"] < text["end"]:
                problems.append(f"{at}.text: span {text['start']}..{text['end']} is empty or negative")
            elif not stale:
                if text["end"] > len(report.text):
                    problems.append(f"{at}.text.end: {text['end']} is beyond the report ({len(report.text)} code "
                                    "points)")
                elif report.text[text["start"]:text["end"]] != text["quote"]:
                    problems.append(f"{at}.text.quote: the report holds {report.text[text['start']:text['end']]!r} at "
                                    f"{text['start']}..{text['end']}, not the quote; rule: re-anchor after editing "
                                    "a report (or mark the link stale)")
                else:
                    if report.id not in sentences:
                        sentences[report.id] = split_sentences(report.text)
                    expected = sentence_index_at(sentences[report.id], text["start"])
                    if expected is not None and text.get("sentence_index", expected) != expected:
                        problems.append(f"{at}.text.sentence_index: {text['sentence_index']}, but the span starts in "
                                        f"sentence {expected}")
        target = raw["target"]["annotation_id"]
        annotation = by_id.get(target)
        if annotation is None:
            problems.append(f"{at}.target.annotation_id: no annotation {target}")
            continue
        kind = TARGET_KINDS.get(annotation["type"])
        if raw["target"].get("kind") != kind:
            problems.append(f"{at}.target.kind: {raw['target'].get('kind')} but {target} is a {annotation['type']} "
                            f"annotation ({kind})")
        mirrors = [m for m in annotation["data"].get("cross_modal_links", [])
                   if isinstance(m, dict) and m.get("kind") == "text" and m.get("target") == raw["id"]]
        expected_mirror = {"target": raw["id"], "kind": "text", "relation": raw["semantic_type"],
                           "consistency": raw.get("consistency", {}).get("state", "unchecked")}
        if mirrors != [expected_mirror]:
            problems.append(f"annotations ({target}).data.cross_modal_links: does not mirror link {raw['id']} "
                            f"({expected_mirror}); rule: each link appears once in its target's cross_modal_links")
    for annotation in annotations:
        for m in annotation["data"].get("cross_modal_links", []):
            if isinstance(m, dict) and m.get("kind") == "text" and m.get("target") in seen:
                link = data["links"][seen[m["target"]]]
                if link["target"]["annotation_id"] != annotation["id"]:
                    problems.append(f"annotations ({annotation['id']}).data.cross_modal_links: names link "
                                    f"{m['target']}, which targets {link['target']['annotation_id']}")
    return problems


# --------------------------------------------------------------------------- document operations
def report_links_of(document: AnnotationDocument) -> ReportLinks:
    """The document's reports and links (empty when it has none)."""
    data = document.report_links
    return ReportLinks.from_dict(data) if data else ReportLinks()


def with_report_links(document: AnnotationDocument, section: ReportLinks) -> AnnotationDocument:
    """``document`` with ``section`` as its ``report_links``, each target's mirror in step."""
    old_ids = {item.id for item in report_links_of(document).links}
    new_ids = {item.id for item in section.links}
    annotations: List[Annotation] = []
    for item in document.annotations:
        kept = [m for m in item.data.get("cross_modal_links", [])
                if not (isinstance(m, dict) and m.get("kind") == "text" and m.get("target") in old_ids | new_ids)]
        kept += [link.mirror() for link in section.links if link.target == item.id]
        annotations.append(item.with_data(cross_modal_links=kept or None))
    data = section.to_dict() if (section.reports or section.links) else None
    return document.replace(annotations=annotations, report_links=data)


def add_report(document: AnnotationDocument, report: Report) -> AnnotationDocument:
    """Add a report (its id must be new)."""
    section = report_links_of(document)
    if any(r.id == report.id for r in section.reports):
        raise InputError(f"the document already has a report {report.id}", field="report.id")
    return with_report_links(document, replace(section, reports=(*section.reports, report)))


def next_link_id(section: ReportLinks, document: AnnotationDocument, prefix: str = "TXT_SPAN_") -> str:
    taken = {item.id for item in section.links} | {a.id for a in document.annotations}
    n = 1
    while f"{prefix}{n:02d}" in taken:
        n += 1
    return f"{prefix}{n:02d}"


def make_reference(report: Report, start: int, end: int) -> TextReference:
    """A reference to code points ``start``..``end`` of ``report`` (validated)."""
    anchor = make_anchor(report.text, start, end)
    sentences = split_sentences(report.text)
    index = sentence_index_at(sentences, start)
    level = "sentence" if any(s.start == start and s.end == end for s in sentences) else "fragment"
    return TextReference(report.id, anchor.start, anchor.end, anchor.quote, anchor.prefix, anchor.suffix,
                         index if index is not None else 0, level)


def add_link(document: AnnotationDocument, report_id: str, start: int, end: int, target: str,
             semantic_type: str, actor: str = "unknown", link_id: Optional[str] = None,
             time: Optional[str] = None) -> Tuple[AnnotationDocument, TextLink]:
    """Link code points ``start``..``end`` of report ``report_id`` to annotation ``target``."""
    section = report_links_of(document)
    report = section.report(report_id)
    annotation = document.annotation(target)
    ident = link_id or next_link_id(section, document)
    if any(item.id == ident for item in section.links) or any(a.id == ident for a in document.annotations):
        raise InputError(f"id {ident} is taken", field="link.id")
    link = TextLink(ident, make_reference(report, start, end), annotation.id, TARGET_KINDS[annotation.type],
                    semantic_type, Consistency(), created_time=time or now_utc(), created_by=actor)
    return with_report_links(document, replace(section, links=(*section.links, link))), link


def remove_link(document: AnnotationDocument, link_id: str) -> AnnotationDocument:
    section = report_links_of(document)
    section.link(link_id)
    return with_report_links(document, replace(section, links=tuple(i for i in section.links if i.id != link_id)))


def replace_link(document: AnnotationDocument, link: TextLink) -> AnnotationDocument:
    section = report_links_of(document)
    section.link(link.id)
    return with_report_links(document, replace(section, links=tuple(link if i.id == link.id else i
                                                                     for i in section.links)))


def confirm_consistency(document: AnnotationDocument, link_id: str, state: str, note: str, actor: str,
                        time: Optional[str] = None) -> AnnotationDocument:
    """A person's decision on a link's consistency (kept by later automatic checks)."""
    link = report_links_of(document).link(link_id)
    if state == "inconsistent" and not note.strip():
        raise InputError("an inconsistent link needs a note saying why (8.4.2.4)", field="consistency.note")
    decided = replace(link.consistency, state=state, note=note.strip(), source="person", by=actor,
                      time=time or now_utc())
    return replace_link(document, replace(link, consistency=decided))


@dataclass(frozen=True)
class AnchorChange:
    """What happened to one link when its report changed."""

    link_id: str
    state: str
    note: str
    old: Tuple[int, int]
    new: Tuple[int, int]

    def to_dict(self) -> Dict[str, Any]:
        return {"link": self.link_id, "state": self.state, "note": self.note, "old": list(self.old),
                "new": list(self.new)}


def update_report_text(document: AnnotationDocument, report_id: str, new_text: str
                       ) -> Tuple[AnnotationDocument, List[AnchorChange]]:
    """Replace a report's text and re-anchor its links (never a silent shift).

    A link whose quote is found again moves (state ``moved``, with a note); one that is not found
    becomes ``stale`` with its old offsets kept and its consistency set back to ``unchecked`` (its
    fragment must be linked again by a person). A stale link whose quote reappears is anchored again.
    """
    section, changes = reanchor_section(report_links_of(document), report_id, new_text)
    return with_report_links(document, section), changes


def reanchor_section(section: ReportLinks, report_id: str, new_text: str, old_sha256: str = ""
                     ) -> Tuple[ReportLinks, List[AnchorChange]]:
    """:func:`update_report_text` on a section alone (the scene adapter uses it when a report was
    edited in its text node; ``old_sha256`` names the old text when the section has the new one)."""
    old = section.report(report_id)
    report = Report(old.id, new_text, "", old.title)
    old_sha = old_sha256 or old.sha256
    changes: List[AnchorChange] = []
    sentences = split_sentences(new_text)
    links: List[TextLink] = []
    for link in section.links:
        if link.text.report_id != report_id:
            links.append(link)
            continue
        result = reanchor(link.text.anchor, new_text)
        a = result.anchor
        if result.state == "stale":
            note = f"{result.note} (report {old_sha[:12]} -> {report.sha256[:12]})"
            consistency = replace(link.consistency, state="unchecked", note="the linked text is stale", checks=(),
                                  source="automatic")
            links.append(replace(link, anchor_state="stale", anchor_note=note, consistency=consistency))
        else:
            index = sentence_index_at(sentences, a.start)
            reference = replace(link.text, start=a.start, end=a.end, quote=a.quote, prefix=a.prefix, suffix=a.suffix,
                                sentence_index=index if index is not None else 0,
                                level="sentence" if any(s.start == a.start and s.end == a.end for s in sentences)
                                else "fragment")
            state = result.state
            note = result.note
            if link.anchor_state == "moved" and state == "anchored":
                state, note = "moved", link.anchor_note  # an earlier move stays on record
            if link.anchor_state == "stale" and state == "anchored":
                note = "found again at its old place after the report text changed"
            links.append(replace(link, text=reference, anchor_state=state, anchor_note=note))
        changes.append(AnchorChange(link.id, links[-1].anchor_state, links[-1].anchor_note,
                                    (link.text.start, link.text.end), (links[-1].text.start, links[-1].text.end)))
    reports = tuple(report if r.id == report_id else r for r in section.reports)
    return ReportLinks(reports, tuple(links)), changes


# --------------------------------------------------------------------------- QC findings
def link_findings(document: AnnotationDocument) -> List[Dict[str, Any]]:
    """QC findings of the document's links and structured records, in the structure of
    :class:`QCMetricsLib.rules.Finding` (``rule``, ``severity``, ``label``, ``side``, ``message``,
    ``principle``): an inconsistent link is an error when a person confirmed it and a warning while it
    is an automatic proposal; a stale link is a warning; a time-deviation tag is information.
    The same function serves ``qc compare --document``, so both report the same findings."""
    from QCMetricsLib.rules import document_section_findings

    return [f.to_dict() for f in document_section_findings(document.to_dict())]
