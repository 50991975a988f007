"""Reading and validating label templates (R-8.2): the JSON Schema first, then the rules a schema
cannot state. Every problem is one line naming the field and the rule; all are reported at once.

Rules checked beyond the schema (``label-template`` v1):

* codes are unique, also against the instance codes ``<CODE>_<n>`` of numbered labels;
* a parent exists, is not the label itself, the parent chain has no cycle, and a child's level
  is not coarser than its parent's (system > organ > substructure > feature);
* labelmap values and instance ranges do not collide and stay within 1..65535;
* a label that allows ``mask`` has a labelmap value; a label with a value has category and type
  codes (Slicer, dcmqi and DICOM SEG need them) and a colour;
* attribute keys are unique per label; enum attributes have options with unique values;
  number ranges have ``minimum <= maximum``; integer attributes have integer bounds; options
  and ranges only where the value type has them;
* name-mapping rules point at existing codes and regular expressions compile.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from RTSSBridgeLib.errors import ProblemListError
from RTSSBridgeLib.labels import Code

from ..schemas import read_json, schema_problems
from .model import (
    LEVELS,
    AttributeDefinition,
    EnumOption,
    Instances,
    LabelTemplate,
    NameMapping,
    TemplateLabel,
    code_from_dict,
)

SCHEMA = "label-template"
_LEVEL_RANK = {"system": 0, "organ": 1, "substructure": 2, "feature": 3, "case": -1}
assert set(_LEVEL_RANK) == set(LEVELS)


class TemplateError(ProblemListError):
    """A label template breaks one or more rules. ``problems`` lists every broken rule, one line
    each; the message shows the first and how many more. Remedy: fix each named field."""

    hint = "run mmanno template validate"


def template_problems(data: Any) -> List[str]:
    """Every problem of a template's JSON data, one line each (empty when it is valid)."""
    problems = schema_problems(SCHEMA, data)
    if problems:
        return problems
    return _rule_problems(data)


def _rule_problems(data: Mapping[str, Any]) -> List[str]:
    problems: List[str] = []
    labels = data["labels"]
    where: Dict[str, int] = {}
    for n, label in enumerate(labels):
        code = label["code"]
        if code in where:
            problems.append(f"labels[{n}].code: duplicate code {code} (also labels[{where[code]}]); "
                            "rule: codes are unique")
        else:
            where[code] = n
    # instance codes must not shadow a label code
    for n, label in enumerate(labels):
        inst = label.get("instances")
        if inst:
            for m, other in enumerate(labels):
                head, _, tail = other["code"].rpartition("_")
                if head == label["code"] and tail.isdigit() and 1 <= int(tail) <= inst["count"]:
                    problems.append(f"labels[{m}].code: {other['code']} collides with instance {tail} of "
                                    f"labels[{n}] {label['code']}; rule: codes are unique")
    # parents, cycles, levels
    for n, label in enumerate(labels):
        parent = label.get("parent")
        if parent is None:
            continue
        if parent == label["code"]:
            problems.append(f"labels[{n}].parent: {label['code']} is its own parent; rule: the label tree has no cycle")
            continue
        if parent not in where:
            problems.append(f"labels[{n}].parent: unknown parent {parent} of {label['code']}; "
                            "rule: a parent is a code of this template")
            continue
        parent_level = labels[where[parent]]["level"]
        if _LEVEL_RANK[label["level"]] < _LEVEL_RANK[parent_level] and label["level"] != "case":
            problems.append(f"labels[{n}].level: {label['code']} is {label['level']} but its parent {parent} is "
                            f"{parent_level}; rule: a child is not coarser than its parent")
    reported = set()
    for n, label in enumerate(labels):
        chain = [label["code"]]
        parent = label.get("parent")
        while parent in where:
            if parent in chain:
                cycle = chain[chain.index(parent):]
                if len(cycle) > 1 and frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    problems.append(f"labels[{n}].parent: cycle {' -> '.join([*cycle, parent])}; "
                                    "rule: the label tree has no cycle")
                break
            chain.append(parent)
            parent = labels[where[parent]].get("parent")
    # values
    used: List[Tuple[int, int, str]] = []
    for n, label in enumerate(labels):
        if label.get("value") is not None:
            used.append((label["value"], label["value"], f"labels[{n}] {label['code']} value {label['value']}"))
        inst = label.get("instances")
        if inst:
            last = inst["first_value"] + inst["count"] - 1
            if last > 65535:
                problems.append(f"labels[{n}].instances: values {inst['first_value']}..{last} of {label['code']} "
                                "exceed 65535; rule: labelmap values are 1..65535")
            used.append((inst["first_value"], last,
                         f"labels[{n}] {label['code']} instance values {inst['first_value']}..{last}"))
    for a in range(len(used)):
        for b in range(a + 1, len(used)):
            lo_a, hi_a, what_a = used[a]
            lo_b, hi_b, what_b = used[b]
            if lo_a <= hi_b and lo_b <= hi_a:
                field = what_b.split(" ")[0]
                problems.append(f"{field}.value: {what_b} collides with {what_a}; rule: labelmap values are unique")
    # per-label rules
    for n, label in enumerate(labels):
        types = label["annotation_types"]
        if "mask" in types and label.get("value") is None:
            problems.append(f"labels[{n}].value: {label['code']} allows mask annotation but has no labelmap value; "
                            "rule: mask labels have a stable value")
        if label.get("instances") and label.get("value") is None:
            problems.append(f"labels[{n}].instances: {label['code']} has instance values but no value of its own; "
                            "rule: numbered labels also have a value")
        if label.get("value") is not None:
            codes = label.get("codes", {})
            missing = [r for r in ("category", "type") if r not in codes]
            if missing:
                roles = " and ".join(missing)
                problems.append(f"labels[{n}].codes: {label['code']} has a labelmap value but no {roles} "
                                "code; rule: exported labels carry category and type codes")
            if label.get("color") is None:
                problems.append(f"labels[{n}].color: {label['code']} has a labelmap value but no colour; "
                                "rule: exported labels have a recommended colour")
        keys: Dict[str, int] = {}
        for m, attribute in enumerate(label.get("attributes", [])):
            at = f"labels[{n}].attributes[{m}]"
            key = attribute["key"]
            if key in keys:
                problems.append(f"{at}.key: duplicate attribute {key} of {label['code']}; rule: attribute keys are "
                                "unique per label")
            keys[key] = m
            problems += _attribute_problems(at, label["code"], attribute)
    # name mapping
    for n, rule in enumerate(data.get("name_mapping", [])):
        if rule["code"] not in where:
            problems.append(f"name_mapping[{n}].code: rule {rule['pattern']!r} maps to unknown code {rule['code']}; "
                            "rule: mappings point at codes of this template")
        if rule["match"] == "regex":
            try:
                re.compile(rule["pattern"])
            except re.error as exc:
                problems.append(f"name_mapping[{n}].pattern: {rule['pattern']!r} is not a regular expression ({exc})")
    return problems


def _attribute_problems(at: str, code: str, attribute: Mapping[str, Any]) -> List[str]:
    problems = []
    kind = attribute["value_type"]
    options = attribute.get("options", [])
    key = attribute["key"]
    if kind == "enum":
        if not options:
            problems.append(f"{at}.options: enum attribute {key} of {code} has no options; "
                            "rule: an enum lists its allowed values")
        values: Dict[str, int] = {}
        for m, option in enumerate(options):
            if option["value"] in values:
                problems.append(f"{at}.options[{m}].value: duplicate option {option['value']!r} of {key}; "
                                "rule: enum values are unique")
            values[option["value"]] = m
    elif options:
        problems.append(f"{at}.options: {kind} attribute {key} of {code} has enum options; "
                        "rule: only enum attributes list options")
    lo, hi = attribute.get("minimum"), attribute.get("maximum")
    if kind in ("integer", "number"):
        if lo is not None and hi is not None and lo > hi:
            problems.append(f"{at}.minimum: range {lo}..{hi} of {key} is empty; rule: minimum <= maximum")
        if kind == "integer":
            for name, bound in (("minimum", lo), ("maximum", hi)):
                if bound is not None and not float(bound).is_integer():
                    problems.append(f"{at}.{name}: {bound} is not an integer bound of integer attribute {key}")
    elif lo is not None or hi is not None:
        problems.append(f"{at}.minimum: {kind} attribute {key} of {code} has a numeric range; "
                        "rule: only integer and number attributes have ranges")
    return problems


def _names(data: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    return {str(k): str(v) for k, v in (data or {}).items()}


def _code(data: Optional[Mapping[str, Any]]) -> Optional[Code]:
    return None if data is None else code_from_dict(data)


def _number(value: Any) -> Any:
    if value is None:
        return None
    return int(value) if isinstance(value, int) else float(value)


def _attribute(data: Mapping[str, Any]) -> AttributeDefinition:
    return AttributeDefinition(
        key=data["key"], value_type=data["value_type"], names=_names(data.get("names")),
        description=_names(data.get("description")),
        options=tuple(EnumOption(o["value"], _names(o.get("names")), o.get("points"), _code(o.get("code")))
                      for o in data.get("options", [])),
        minimum=_number(data.get("minimum")), maximum=_number(data.get("maximum")), unit=data.get("unit", ""),
        required=bool(data.get("required", False)))


def _label(data: Mapping[str, Any]) -> TemplateLabel:
    instances = data.get("instances")
    return TemplateLabel(
        code=data["code"], names=_names(data["names"]), category=data["category"], level=data["level"],
        annotation_types=tuple(data["annotation_types"]), parent=data.get("parent"),
        definition=_names(data.get("definition")), structure=_names(data.get("structure")),
        attributes=tuple(_attribute(a) for a in data.get("attributes", [])),
        color=tuple(data["color"]) if data.get("color") is not None else None,
        value=data.get("value"),
        instances=Instances(instances["first_value"], instances["count"]) if instances else None,
        codes={role: code_from_dict(c) for role, c in data.get("codes", {}).items()},
        rt_interpreted_type=data.get("rt_interpreted_type", ""))


def template_from_dict(data: Any, file: Optional[str] = None) -> LabelTemplate:
    """Validate ``data`` (the template's JSON) and build the :class:`LabelTemplate`.

    Raises :class:`TemplateError` listing every problem when it is not valid.
    """
    problems = template_problems(data)
    if problems:
        raise TemplateError(problems, file=file)
    return LabelTemplate(
        id=data["id"], version=data["version"], title=_names(data["title"]),
        modalities=tuple(data["modalities"]), labels=tuple(_label(label) for label in data["labels"]),
        description=_names(data.get("description")),
        name_mapping=tuple(NameMapping(m["pattern"], m["code"], m["match"]) for m in data.get("name_mapping", [])))


def read_template_file(path: str) -> LabelTemplate:
    """Read and validate a template JSON file (raises :class:`InputError` / :class:`TemplateError`)."""
    return template_from_dict(read_json(path), file=path)
