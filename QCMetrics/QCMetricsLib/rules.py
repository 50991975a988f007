"""Qualitative rule checks (R-9.2): normativity, completeness, plausibility, traceability.

Each rule has a stable name and produces :class:`Finding` objects (severity ``error``, ``warning``
or ``info``); the verdict counts errors as reasons for rework and warnings as limits.

==========================  ======================================================================
rule                        finding
==========================  ======================================================================
``CODE_IN_TEMPLATE``        a label (reference or test) maps to no code of the task's template
``MAPPING_COMPLETE``        a reference label has no test counterpart, or a test label has no
                            reference counterpart (labels matched by code, value, then name)
``SAME_GRID``               the test was on another grid and was resampled (stated, info)
``INSIDE_IMAGE``            test voxels fell outside the reference image when resampled; points,
                            boxes or polygons of an annotation document lie outside the image
``CONTAINMENT``             a label lies (partly) outside the label that must contain it (e.g. a
                            nodule outside its lung), beyond the allowed fraction; the parent's
                            enclosed holes count as inside (in a labelmap the lesion replaces them)
``REQUIRED_ATTRIBUTES``     an annotation of a label lacks an attribute the task requires
``TRACEABILITY``            an annotation document lacks annotator, version, time stamps or software
``EMPTY_LABEL``             a label is declared but has no voxel
``TEXT_LINK_CONSISTENCY``   a report fragment linked to a region is marked "inconsistent" with it
                            (R-8.4.2.4): an error once a person confirmed it, a warning while it is
                            the consistency aids' proposal
``TEXT_LINK_ANCHOR``        a link's quoted report text is no longer found in the report (stale)
``TIME_DEVIATION``          a structured record's exam time is more than the task's threshold away
                            from the image (R-8.4.3.5, info: the tag lets training filter it)
==========================  ======================================================================

The last three read the ``report_links`` and ``structured_data`` sections of an annotation
document given as a dict (:func:`document_section_findings`); the MultiModalAnnotation core that
writes those sections reports through the same function, so ``mmanno link check`` and ``qc
compare --document`` give the same findings.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

SEVERITIES = ("error", "warning", "info")
RULES = {
    "CODE_IN_TEMPLATE": "normativity: label codes exist in the template",
    "MAPPING_COMPLETE": "completeness: every label has its counterpart",
    "SAME_GRID": "normativity: one coordinate system (different grids are resampled)",
    "INSIDE_IMAGE": "normativity: coordinates inside the image",
    "CONTAINMENT": "plausibility: no logical conflict (child inside its parent)",
    "REQUIRED_ATTRIBUTES": "completeness: required attributes present",
    "TRACEABILITY": "traceability: annotator, version, time stamps and software recorded",
    "EMPTY_LABEL": "completeness: declared labels are not empty",
    "TEXT_LINK_CONSISTENCY": "plausibility: report text and image region agree (8.4.2.4)",
    "TEXT_LINK_ANCHOR": "traceability: every link still points at its quoted report text",
    "TIME_DEVIATION": "consistency: structured data close in time to the image (8.4.3.5)",
}


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    label: str = ""
    side: str = ""

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    def to_dict(self) -> Dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "label": self.label, "side": self.side,
                "message": self.message, "principle": RULES[self.rule]}


def matches(pattern: str, code: Optional[str], name: str) -> bool:
    texts = [t for t in (code or "", name) if t]
    return any(fnmatch.fnmatchcase(t.casefold(), pattern.casefold()) for t in texts)


def containment_fraction_outside(child: np.ndarray, parent: np.ndarray) -> float:
    """Share of ``child`` voxels outside ``parent`` (0 when the child is empty)."""
    n = int(np.count_nonzero(child))
    if n == 0:
        return 0.0
    return float(np.count_nonzero(child & ~parent)) / n


def _inside(point: Sequence[float], shape: Sequence[int]) -> bool:
    return all(-0.5 <= float(p) <= n - 0.5 for p, n in zip(point, shape))


def _short(text: str, n: int = 40) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def document_section_findings(document: Dict[str, Any], side: str = "test") -> List[Finding]:
    """Findings of the image-text links and structured records of an annotation document (dict)."""
    findings: List[Finding] = []
    raw_links = document.get("report_links")
    links: Dict[str, Any] = raw_links if isinstance(raw_links, dict) else {}
    for link in links.get("links", []) if isinstance(links.get("links"), list) else []:
        if not isinstance(link, dict):
            continue
        target = str((link.get("target") or {}).get("annotation_id", ""))
        quote = _short((link.get("text") or {}).get("quote", ""))
        where = f"link {link.get('id')} ({link.get('semantic_type')}) \u201c{quote}\u201d -> {target}"
        anchor = link.get("anchor") or {}
        if anchor.get("state") == "stale":
            findings.append(Finding("TEXT_LINK_ANCHOR", "warning", f"{where}: {anchor.get('note', 'stale')}", target,
                                    side))
        consistency = link.get("consistency") or {}
        if consistency.get("state") == "inconsistent":
            person = consistency.get("source") == "person"
            who = "confirmed by a person" if person else "proposed, to be confirmed"
            findings.append(Finding("TEXT_LINK_CONSISTENCY", "error" if person else "warning",
                                    f"{where}: inconsistent ({who}): {consistency.get('note', '')}", target, side))
    raw_structured = document.get("structured_data")
    structured: Dict[str, Any] = raw_structured if isinstance(raw_structured, dict) else {}
    for table in structured.get("tables", []) if isinstance(structured.get("tables"), list) else []:
        for record in table.get("records", []) if isinstance(table, dict) else []:
            deviation = record.get("time_deviation") if isinstance(record, dict) else None
            if isinstance(deviation, dict) and deviation.get("tag"):
                findings.append(Finding("TIME_DEVIATION", "info",
                                        f"table {table.get('id')} record {record.get('id')}: exam date "
                                        f"{deviation.get('exam_date')} is {deviation.get('days')} days from the image "
                                        f"({deviation.get('image_date')}); more than {deviation.get('threshold_days')} "
                                        "days: time-deviation tag", str(record.get("id", "")), side))
    return findings


def check_document(document: Dict[str, Any], known_codes: Optional[Sequence[str]],
                   required_attributes: Mapping[str, Sequence[str]], traceability_fields: Sequence[str],
                   image_shape_ijk: Optional[Sequence[int]] = None, side: str = "test") -> List[Finding]:
    """Rules on an annotation document (Appendix C form, or Appendix B's simpler one) given as a dict."""
    findings: List[Finding] = []
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else document
    for name in traceability_fields:
        value = metadata.get(name) if isinstance(metadata, dict) else None
        if value in (None, "", [], {}):
            findings.append(Finding("TRACEABILITY", "warning", f"metadata field '{name}' is missing or empty",
                                    side=side))
    shape = image_shape_ijk
    if shape is None and isinstance(document.get("image"), dict) and "shape" in document["image"]:
        shape = document["image"]["shape"]
    for n, annotation in enumerate(document.get("annotations", []) or []):
        if not isinstance(annotation, dict):
            continue
        code = str(annotation.get("label_code") or annotation.get("label") or "")
        where = f"annotation {annotation.get('id', n)} ({code or 'no code'})"
        if known_codes is not None and code and code not in known_codes:
            findings.append(Finding("CODE_IN_TEMPLATE", "error", f"{where}: code {code} is not in the template",
                                    code, side))
        data: Dict[str, Any] = annotation["data"] if isinstance(annotation.get("data"), dict) else {}
        attributes = {**(annotation.get("attributes") or {}), **(data.get("attributes") or {})}
        for pattern, names in required_attributes.items():
            if code and fnmatch.fnmatchcase(code, pattern):
                missing = [a for a in names if attributes.get(a) in (None, "")]
                if missing:
                    findings.append(Finding("REQUIRED_ATTRIBUTES", "error",
                                            f"{where}: required attribute(s) {', '.join(missing)} missing", code, side))
        if shape is not None:
            points: List[Sequence[float]] = []
            if isinstance(data.get("bbox"), (list, tuple)) and len(data["bbox"]) in (4, 6):
                b = data["bbox"]
                half = len(b) // 2
                points += [b[:half], b[half:]]
            for key in ("polygon", "points"):
                if isinstance(data.get(key), (list, tuple)):
                    points += [p for p in data[key] if isinstance(p, (list, tuple))]
            if isinstance(data.get("point"), (list, tuple)):
                points.append(data["point"])
            outside = [p for p in points if not _inside(p, shape[: len(p)])]
            if outside:
                findings.append(Finding("INSIDE_IMAGE", "error",
                                        f"{where}: {len(outside)} coordinate(s) outside the image {list(shape)}, "
                                        f"e.g. {list(outside[0])}", code, side))
    findings += document_section_findings(document, side)
    return findings
