"""The label template model (R-8.2, R-8.3, R-6.6, Appendix C): labels, attributes, codes, name mapping.

A :class:`LabelTemplate` is a versioned tree of :class:`TemplateLabel` s. Each label has a unique
UPPER_SNAKE machine code, display names per locale (at least ``en`` and ``zh``), a category
(organ, lesion, attribute, landmark, device, other), a granularity level (system, organ,
substructure, feature, case), an optional parent, a semantic definition, structural attributes
(organ system, organ type, edge clarity), the annotation types it allows, attribute definitions
(enums, integer/number ranges, booleans, text), a recommended colour, standard codes (scheme,
value, meaning) for segmentation category, type, type modifier, anatomic region and region
modifier, a stable labelmap value and optionally a range of *instance* values (lesion ``n`` of a
multi-lesion label gets ``first_value + n - 1``, the ``10 + n`` convention of the sample cases).

The model is immutable; :func:`RTSSBridgeLib.labels.LabelSet` is the flat view the lower modules
use (:meth:`LabelTemplate.to_label_set`). Construction from JSON with full validation is in
:mod:`.validation`; this module only holds the values and their exact JSON form
(``to_dict`` / :func:`~.validation.template_from_dict` are inverses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.labels import Code, LabelInfo, LabelSet, NameRule

CATEGORIES = ("organ", "lesion", "attribute", "landmark", "device", "other")
LEVELS = ("system", "organ", "substructure", "feature", "case")
ANNOTATION_TYPES = ("mask", "polygon", "bbox", "point", "attribute")
VALUE_TYPES = ("enum", "integer", "number", "boolean", "text")
CODE_ROLES = ("category", "type", "type_modifier", "region", "region_modifier")
STRUCTURE_KEYS = ("organ_system", "organ_type", "edge_clarity")
REQUIRED_LOCALES = ("en", "zh")
#: RT ROI Interpreted Type (DICOM PS3.3 C.8.8.8) values a template may recommend.
RT_INTERPRETED_TYPES = ("", "EXTERNAL", "PTV", "CTV", "GTV", "AVOIDANCE", "ORGAN", "MARKER", "CAVITY", "CONTROL",
                        "TREATED_VOLUME", "IRRAD_VOLUME", "SUPPORT", "FIXATION", "CONTRAST_AGENT", "REGISTRATION",
                        "ISOCENTER", "BOLUS", "DOSE_REGION", "BRACHY_CHANNEL", "BRACHY_ACCESSORY",
                        "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD")

Names = Mapping[str, str]


def code_to_dict(code: Code) -> Dict[str, str]:
    return {"scheme": code.scheme, "value": code.value, "meaning": code.meaning}


def code_from_dict(data: Mapping[str, Any]) -> Code:
    return Code(str(data["scheme"]), str(data["value"]), str(data["meaning"]))


def code_text(code: Optional[Code]) -> str:
    """``SCT|39607008|Lung`` (the flat-CSV cell form), empty for None."""
    return "" if code is None else f"{code.scheme}|{code.value}|{code.meaning}"


def _same_code(a: Optional[Code], b: Optional[Code]) -> bool:
    if a is None or b is None:
        return a is b
    return (a.scheme, a.value, a.meaning) == (b.scheme, b.value, b.meaning)


@dataclass(frozen=True)
class EnumOption:
    """One allowed value of an enum attribute, e.g. TI-RADS composition ``solid`` (2 points)."""

    value: str
    names: Names = field(default_factory=dict)
    points: Optional[int] = None  # score points of scoring systems (ACR TI-RADS)
    code: Optional[Code] = None

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"value": self.value}
        if self.names:
            data["names"] = dict(self.names)
        if self.points is not None:
            data["points"] = self.points
        if self.code is not None:
            data["code"] = code_to_dict(self.code)
        return data

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EnumOption) and (self.value, dict(self.names), self.points)
                == (other.value, dict(other.names), other.points) and _same_code(self.code, other.code))

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class AttributeDefinition:
    """An attribute (extension field) a label carries: its key, value type and allowed values.

    ``value_type``: ``enum`` (one of ``options``), ``integer`` or ``number`` (within
    ``minimum``..``maximum`` when given, e.g. erosion 0-5, JSN 0-4), ``boolean`` or ``text``.
    """

    key: str
    value_type: str
    names: Names = field(default_factory=dict)
    description: Names = field(default_factory=dict)
    options: Tuple[EnumOption, ...] = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    unit: str = ""
    required: bool = False

    def option(self, value: str) -> Optional[EnumOption]:
        return next((o for o in self.options if o.value == value), None)

    def check(self, value: Any) -> Optional[str]:
        """Why ``value`` is not allowed for this attribute (None when it is)."""
        kind = self.value_type
        if kind == "enum":
            if not isinstance(value, str) or self.option(value) is None:
                allowed = ", ".join(o.value for o in self.options)
                return f"{value!r} is not one of the allowed values of {self.key} ({allowed})"
            return None
        if kind == "boolean":
            return None if isinstance(value, bool) else f"{value!r} for {self.key} must be true or false"
        if kind == "text":
            return None if isinstance(value, str) else f"{value!r} for {self.key} must be text"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} for {self.key} must be a number"
        if kind == "integer" and (isinstance(value, float) and not value.is_integer()):
            return f"{value!r} for {self.key} must be an integer"
        if math.isnan(value):
            return f"NaN for {self.key} is not a value"
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            return (f"{value!r} for {self.key} is out of range {_num(self.minimum)}..{_num(self.maximum)}"
                    + (f" {self.unit}" if self.unit else ""))
        return None

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"key": self.key, "value_type": self.value_type}
        if self.names:
            data["names"] = dict(self.names)
        if self.description:
            data["description"] = dict(self.description)
        if self.options:
            data["options"] = [o.to_dict() for o in self.options]
        if self.minimum is not None:
            data["minimum"] = self.minimum
        if self.maximum is not None:
            data["maximum"] = self.maximum
        if self.unit:
            data["unit"] = self.unit
        if self.required:
            data["required"] = True
        return data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AttributeDefinition) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _num(value: Optional[float]) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Instances:
    """Value range of numbered instances of a label (lesion ``n`` -> ``first_value + n - 1``)."""

    first_value: int
    count: int

    @property
    def last_value(self) -> int:
        return self.first_value + self.count - 1

    def value_of(self, n: int) -> int:
        if not 1 <= n <= self.count:
            raise InputError(f"instance {n} is outside 1..{self.count}", field="instance")
        return self.first_value + n - 1

    def to_dict(self) -> Dict[str, int]:
        return {"first_value": self.first_value, "count": self.count}


@dataclass(frozen=True)
class TemplateLabel:
    """One label of a template (see the module docstring for the fields)."""

    code: str
    names: Names
    category: str
    level: str
    annotation_types: Tuple[str, ...]
    parent: Optional[str] = None
    definition: Names = field(default_factory=dict)
    structure: Mapping[str, str] = field(default_factory=dict)
    attributes: Tuple[AttributeDefinition, ...] = ()
    color: Optional[Tuple[int, int, int]] = None
    value: Optional[int] = None
    instances: Optional[Instances] = None
    codes: Mapping[str, Code] = field(default_factory=dict)
    rt_interpreted_type: str = ""

    @property
    def name(self) -> str:
        """The English display name."""
        return str(self.names.get("en") or self.code)

    def display_name(self, locale: str = "en") -> str:
        return str(self.names.get(locale) or self.names.get("en") or self.code)

    def attribute(self, key: str) -> Optional[AttributeDefinition]:
        return next((a for a in self.attributes if a.key == key), None)

    def code_for(self, role: str) -> Optional[Code]:
        return self.codes.get(role)

    def instance_code(self, n: int) -> str:
        """Machine code of instance ``n`` (``METASTASIS_3``), as the sample cases name them."""
        return f"{self.code}_{n}"

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"code": self.code, "names": dict(self.names), "category": self.category,
                                "level": self.level}
        if self.parent:
            data["parent"] = self.parent
        if self.definition:
            data["definition"] = dict(self.definition)
        if self.structure:
            data["structure"] = dict(self.structure)
        data["annotation_types"] = list(self.annotation_types)
        if self.attributes:
            data["attributes"] = [a.to_dict() for a in self.attributes]
        if self.color is not None:
            data["color"] = list(self.color)
        if self.value is not None:
            data["value"] = self.value
        if self.instances is not None:
            data["instances"] = self.instances.to_dict()
        if self.codes:
            data["codes"] = {role: code_to_dict(self.codes[role]) for role in CODE_ROLES if role in self.codes}
        if self.rt_interpreted_type:
            data["rt_interpreted_type"] = self.rt_interpreted_type
        return data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TemplateLabel) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class NameMapping:
    """A rule mapping ROI names found in real files to a label code (``match``: exact, glob, regex)."""

    pattern: str
    code: str
    match: str = "exact"

    def to_rule(self) -> NameRule:
        return NameRule(self.pattern, self.code, self.match)

    def to_dict(self) -> Dict[str, str]:
        return {"pattern": self.pattern, "match": self.match, "code": self.code}


@dataclass(frozen=True)
class LabelTemplate:
    """A versioned label template (R-8.2). Build it with :func:`~.validation.template_from_dict`."""

    id: str
    version: str
    title: Names
    modalities: Tuple[str, ...]
    labels: Tuple[TemplateLabel, ...]
    description: Names = field(default_factory=dict)
    name_mapping: Tuple[NameMapping, ...] = ()

    # ------------------------------------------------------------------ lookup
    def __iter__(self) -> Iterator[TemplateLabel]:
        return iter(self.labels)

    @property
    def codes(self) -> List[str]:
        return [label.code for label in self.labels]

    def get(self, code: str) -> Optional[TemplateLabel]:
        return next((label for label in self.labels if label.code == code), None)

    def label(self, code: str) -> TemplateLabel:
        found = self.get(code)
        if found is None:
            raise InputError(f"{code!r} is not a label of template {self.id} {self.version}", field="label_code")
        return found

    def children(self, code: Optional[str]) -> List[TemplateLabel]:
        return [label for label in self.labels if label.parent == code]

    def locales(self) -> List[str]:
        """Every locale used by a display name, required ones first."""
        found = set(self.title)
        for label in self.labels:
            found.update(label.names)
            found.update(label.definition)
            for attribute in label.attributes:
                found.update(attribute.names)
                found.update(attribute.description)
                for option in attribute.options:
                    found.update(option.names)
        found.update(self.description)
        return [*REQUIRED_LOCALES, *sorted(found - set(REQUIRED_LOCALES))]

    def labelmap_labels(self) -> List[TemplateLabel]:
        """Labels with a labelmap value (the ones exporters write), in template order."""
        return [label for label in self.labels if label.value is not None]

    def resolve_value(self, value: int) -> Optional[Tuple[TemplateLabel, Optional[int]]]:
        """(label, instance number or None) that labelmap ``value`` stands for; None when unused."""
        for label in self.labels:
            if label.value == value:
                return label, None
            if label.instances is not None and label.instances.first_value <= value <= label.instances.last_value:
                return label, value - label.instances.first_value + 1
        return None

    def value_of(self, code: str, instance: Optional[int] = None) -> int:
        """Labelmap value of label ``code`` (of its instance ``instance`` when given)."""
        label = self.label(code)
        if instance is not None:
            if label.instances is None:
                raise InputError(f"label {code} has no numbered instances (instance {instance} given)",
                                 field="instance")
            return label.instances.value_of(instance)
        if label.value is None:
            raise InputError(f"label {code} has no labelmap value (annotation types "
                             f"{', '.join(label.annotation_types)})", field="value")
        return label.value

    def match_roi_name(self, roi_name: str) -> Optional[TemplateLabel]:
        """The label an ROI name from a real file stands for (code, any display name, then the rules)."""
        info = self.to_label_set().map_name(roi_name)
        if info is None:
            return None
        return self.get(info.code) or self._instance_owner(info.code)

    def _instance_owner(self, code: str) -> Optional[TemplateLabel]:
        head, _, tail = code.rpartition("_")
        label = self.get(head)
        return label if label is not None and label.instances is not None and tail.isdigit() else None

    # ------------------------------------------------------------------ views
    def to_label_set(self) -> LabelSet:
        """The flat view RTSSBridge and QCMetrics use: every label with a value, then every
        instance value as ``<CODE>_<n>`` (so a sample's ``METASTASIS_3`` = 12 is found), with the
        name-mapping rules of labels that are in the set."""
        infos: List[LabelInfo] = []
        for label in self.labelmap_labels():
            infos.append(self._info(label, label.code, label.name, label.names, int(label.value or 0)))
        for label in self.labels:
            if label.instances is None:
                continue
            for n in range(1, label.instances.count + 1):
                names = {loc: f"{text} {n}" for loc, text in label.names.items()}
                infos.append(self._info(label, label.instance_code(n), f"{label.name} {n}", names,
                                        label.instances.value_of(n)))
        known = {info.code for info in infos}
        rules = [m.to_rule() for m in self.name_mapping if m.code in known]
        return LabelSet(self.id, self.version, tuple(infos), tuple(rules))

    @staticmethod
    def _info(label: TemplateLabel, code: str, name: str, names: Names, value: int) -> LabelInfo:
        return LabelInfo(
            code=code, name=name, value=value, color=label.color or (128, 128, 128),
            category=label.codes.get("category"), type=label.codes.get("type"),
            type_modifier=label.codes.get("type_modifier"), anatomic_region=label.codes.get("region"),
            anatomic_region_modifier=label.codes.get("region_modifier"),
            rt_interpreted_type=label.rt_interpreted_type, names=dict(names))

    def to_dict(self) -> Dict[str, Any]:
        """The template's JSON form (``label-template`` schema v1)."""
        from ..schemas import schema_id

        data: Dict[str, Any] = {"schema": schema_id("label-template"), "id": self.id, "version": self.version,
                                "title": dict(self.title)}
        if self.description:
            data["description"] = dict(self.description)
        data["modalities"] = list(self.modalities)
        data["labels"] = [label.to_dict() for label in self.labels]
        if self.name_mapping:
            data["name_mapping"] = [m.to_dict() for m in self.name_mapping]
        return data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelTemplate) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def replace_labels(self, labels: Sequence[TemplateLabel]) -> LabelTemplate:
        return LabelTemplate(self.id, self.version, self.title, self.modalities, tuple(labels), self.description,
                             self.name_mapping)
