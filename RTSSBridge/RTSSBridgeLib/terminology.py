"""Segment codes: template labels <-> DICOM SEG / RTSS codes <-> Slicer terminology entries (R-8.2, R-5.3).

A template label carries its codes as :class:`~RTSSBridgeLib.labels.Code` values (category, type,
type modifier, anatomic region and its modifier). DICOM SEG needs them as Segmented Property
Category / Type codes, an RT Structure Set as an RT ROI Identification Code, and Slicer as a
*terminology entry* string on each segment (``vtkSegment.SetTerminology``), whose format is::

    <category and type context>~<category>~<type>~<type modifier>~<anatomic context>~<region>~<region modifier>

with each code written ``scheme^value^meaning`` (empty ``^^`` when absent). The scene adapter test
parses the strings made here with Slicer's own ``vtkSlicerTerminologiesModuleLogic``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from .labels import Code, LabelInfo, LabelSet

#: Terminology contexts of the strings written (Slicer ships both lists).
CATEGORY_TYPE_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
#: What a segment without template codes is called (Slicer's own default for a new segment).
DEFAULT_CATEGORY = Code("SCT", "85756007", "Tissue")
DEFAULT_TYPE = Code("SCT", "85756007", "Tissue")


@dataclass(frozen=True)
class SegmentCodes:
    """The codes of one segment (category and type always present)."""

    category: Code
    type: Code
    type_modifier: Optional[Code] = None
    anatomic_region: Optional[Code] = None
    anatomic_region_modifier: Optional[Code] = None

    def to_dict(self) -> Dict[str, Optional[Dict[str, str]]]:
        def one(code: Optional[Code]) -> Optional[Dict[str, str]]:
            return None if code is None else {"scheme": code.scheme, "value": code.value, "meaning": code.meaning}

        return {"category": one(self.category), "type": one(self.type), "type_modifier": one(self.type_modifier),
                "anatomic_region": one(self.anatomic_region),
                "anatomic_region_modifier": one(self.anatomic_region_modifier)}


def codes_for(label: Optional[LabelInfo]) -> SegmentCodes:
    """The codes of a template label, or the generic Tissue/Tissue when there is none."""
    if label is None or label.type is None:
        return SegmentCodes(label.category if label is not None and label.category is not None else DEFAULT_CATEGORY,
                            DEFAULT_TYPE)
    return SegmentCodes(label.category or DEFAULT_CATEGORY, label.type, label.type_modifier, label.anatomic_region,
                        label.anatomic_region_modifier)


def _code_text(code: Optional[Code]) -> str:
    if code is None:
        return "^^"
    return "^".join(part.replace("^", " ").replace("~", " ") for part in (code.scheme, code.value, code.meaning))


def terminology_entry(codes: SegmentCodes) -> str:
    """The Slicer terminology entry string of ``codes`` (format in the module docstring)."""
    region_context = ANATOMIC_CONTEXT if codes.anatomic_region is not None else ""
    return "~".join([CATEGORY_TYPE_CONTEXT, _code_text(codes.category), _code_text(codes.type),
                     _code_text(codes.type_modifier), region_context, _code_text(codes.anatomic_region),
                     _code_text(codes.anatomic_region_modifier)])


def _parse_code(text: str) -> Optional[Code]:
    parts = text.split("^")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        return None
    return Code(parts[0], parts[1], parts[2])


def parse_terminology_entry(text: str) -> Optional[SegmentCodes]:
    """Codes from a Slicer terminology entry string; None when it holds no category and type."""
    parts = str(text or "").split("~")
    if len(parts) != 7:
        return None
    category, kind = _parse_code(parts[1]), _parse_code(parts[2])
    if category is None or kind is None:
        return None
    return SegmentCodes(category, kind, _parse_code(parts[3]), _parse_code(parts[5]), _parse_code(parts[6]))


def label_for_codes(label_set: Optional[LabelSet], codes: Optional[SegmentCodes]) -> Optional[LabelInfo]:
    """The template label with the same type (and type modifier, and region when both give one)."""
    if label_set is None or codes is None or codes.type == DEFAULT_TYPE:
        return None
    candidates = [lab for lab in label_set.labels if lab.type is not None and lab.type == codes.type]
    exact = [lab for lab in candidates if lab.type_modifier == codes.type_modifier
             and (lab.anatomic_region is None or codes.anatomic_region is None
                  or lab.anatomic_region == codes.anatomic_region)]
    if len(exact) == 1:
        return exact[0]
    if len(candidates) == 1 and codes.type_modifier is None:
        return candidates[0]
    return None
