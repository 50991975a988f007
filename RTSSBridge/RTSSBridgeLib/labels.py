"""Label sets: what RTSSBridge and QCMetrics need to know of a label template (R-8.2, R-5.3).

The label template itself (its JSON Schema, tree, attributes, exports) belongs to
MultiModalAnnotation (``MultiModalAnnotationLib``); the lower modules must not import it
(ARCHITECTURE.md). A template is therefore handed down as a :class:`LabelSet`: the flat list of
labels with their machine code, display name, stable labelmap value, colour and standard codes,
plus the ordered rules that map ROI names found in real files (seed 002's ``R_lat_temp``,
``L_frontal``, ``*Skull``) to codes. The command line turns ``--template FILE`` into a LabelSet
through :func:`RTSSBridgeLib.cliutil.load_label_set`, which MultiModalAnnotation configures.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

from .errors import InputError

_CODE_RE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")


@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM PS3.3 8.8): compared on (scheme, value); meaning is for people."""

    scheme: str  # Coding Scheme Designator, e.g. "SCT" (SNOMED CT), "DCM", "99MMANNO"
    value: str  # Code Value
    meaning: str  # Code Meaning

    def __post_init__(self) -> None:
        for name in ("scheme", "value", "meaning"):
            if not str(getattr(self, name)).strip():
                raise InputError("must not be empty", field=f"code.{name}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Code) and (self.scheme, self.value) == (other.scheme, other.value)

    def __hash__(self) -> int:
        return hash((self.scheme, self.value))


@dataclass(frozen=True)
class LabelInfo:
    """One label of a template, as exporters, importers and QC need it."""

    code: str  # unique machine code, UPPER_SNAKE (e.g. LUNG_LEFT)
    name: str  # display name (English)
    value: int  # stable labelmap value (1..65535), the same in every case
    color: Tuple[int, int, int] = (128, 128, 128)  # recommended RGB 0..255
    category: Optional[Code] = None  # segmentation category (e.g. SCT 123037004 "Anatomical Structure")
    type: Optional[Code] = None  # property type (e.g. SCT 39607008 "Lung")
    type_modifier: Optional[Code] = None
    anatomic_region: Optional[Code] = None
    anatomic_region_modifier: Optional[Code] = None  # e.g. SCT 7771000 "Left"
    rt_interpreted_type: str = ""  # RT ROI Interpreted Type (ORGAN, GTV, PTV, AVOIDANCE, EXTERNAL, ...)
    names: Mapping[str, str] = field(default_factory=dict)  # display names per locale ({"zh": "左肺"})

    def __post_init__(self) -> None:
        if not _CODE_RE.match(self.code):
            raise InputError(f"{self.code!r} is not an UPPER_SNAKE machine code", field="label.code")
        if not isinstance(self.value, int) or not 1 <= self.value <= 65535:
            raise InputError(f"{self.value!r} for {self.code} must be an integer 1..65535", field="label.value")
        if len(self.color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in self.color):
            raise InputError(f"{self.color!r} for {self.code} must be three integers 0..255", field="label.color")


@dataclass(frozen=True)
class NameRule:
    """Maps ROI names to a label code. ``kind``: ``exact`` (case-insensitive, spaces folded),
    ``glob`` (fnmatch, case-insensitive) or ``regex`` (Python, full match, case-insensitive)."""

    pattern: str
    code: str
    kind: str = "exact"

    def __post_init__(self) -> None:
        if self.kind not in ("exact", "glob", "regex"):
            raise InputError(f"{self.kind!r} must be exact, glob or regex", field="name_rule.kind")
        if self.kind == "regex":
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise InputError(f"{self.pattern!r} is not a regular expression ({exc})",
                                 field="name_rule.pattern") from exc

    def matches(self, roi_name: str) -> bool:
        name = normalise_roi_name(roi_name)
        if self.kind == "exact":
            return name == normalise_roi_name(self.pattern)
        if self.kind == "glob":
            return fnmatch.fnmatchcase(name, normalise_roi_name(self.pattern))
        return re.fullmatch(self.pattern, roi_name.strip(), flags=re.IGNORECASE) is not None


def normalise_roi_name(name: str) -> str:
    """Case-folded, with runs of white space as one space and no leading/trailing space."""
    return " ".join(str(name).split()).casefold()


@dataclass(frozen=True)
class LabelSet:
    """The labels of one template and its ROI-name rules, validated on construction."""

    template_id: str
    version: str
    labels: Tuple[LabelInfo, ...]
    name_rules: Tuple[NameRule, ...] = ()

    def __post_init__(self) -> None:
        codes: Dict[str, LabelInfo] = {}
        values: Dict[int, str] = {}
        for label in self.labels:
            if label.code in codes:
                raise InputError(f"duplicate code {label.code}", field="labels.code")
            if label.value in values:
                raise InputError(f"value {label.value} of {label.code} is already used by {values[label.value]}",
                                 field="labels.value")
            codes[label.code] = label
            values[label.value] = label.code
        for rule in self.name_rules:
            if rule.code not in codes:
                raise InputError(f"rule {rule.pattern!r} maps to unknown code {rule.code}", field="name_rules.code")

    def by_code(self, code: str) -> LabelInfo:
        for label in self.labels:
            if label.code == code:
                return label
        raise InputError(f"{code!r} is not a label of template {self.template_id}", field="code")

    def by_value(self, value: int) -> Optional[LabelInfo]:
        return next((label for label in self.labels if label.value == value), None)

    def map_name(self, roi_name: str) -> Optional[LabelInfo]:
        """The label an ROI name stands for: a label's own code or display names first, then the
        rules in order; None when nothing matches."""
        name = normalise_roi_name(roi_name)
        for label in self.labels:
            if name in {normalise_roi_name(n) for n in (label.code, label.name, *label.names.values())}:
                return label
        for rule in self.name_rules:
            if rule.matches(roi_name):
                return self.by_code(rule.code)
        return None

    @classmethod
    def from_labels(cls, labels: Iterable[LabelInfo], template_id: str = "ad-hoc", version: str = "0",
                    name_rules: Sequence[NameRule] = ()) -> LabelSet:
        return cls(template_id, version, tuple(labels), tuple(name_rules))
