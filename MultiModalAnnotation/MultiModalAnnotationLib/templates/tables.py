"""The flat CSV of a template: one spreadsheet a person edits and imports back (R-8.2).

One row per record; the ``record`` column says what the row is and which columns it uses:

=========  ==========================================================================
record     columns
=========  ==========================================================================
template   template_id, version, modalities (``CT;MR``), name_<locale> (title),
           definition_<locale> (description)
label      code, parent, category, level, annotation_types (``mask;bbox``), value,
           first_instance_value, instance_count, color (``R;G;B``), name_<locale>,
           definition_<locale>, organ_system, organ_type, edge_clarity,
           category_code ... region_modifier_code (``SCT|39607008|Lung``), rt_interpreted_type
attribute  code, attribute, value_type, minimum, maximum, unit, required (true/false),
           name_<locale>, definition_<locale> (the attribute's description)
option     code, attribute, option, points, option_code, name_<locale>
mapping    pattern, match, code
=========  ==========================================================================

Rows may be reordered within their record kind; labels keep the order of their rows. Import
validates the result like any template file, so every broken rule is reported with the line.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Dict, List, Optional

from RTSSBridgeLib.errors import InputError

from ..schemas import schema_id
from .model import CODE_ROLES, STRUCTURE_KEYS, LabelTemplate, code_text
from .validation import template_from_dict

RECORDS = ("template", "label", "attribute", "option", "mapping")
_FIXED = ["record", "template_id", "version", "modalities", "code", "attribute", "option", "parent", "category",
          "level", "annotation_types", "value", "first_instance_value", "instance_count", "color",
          *STRUCTURE_KEYS, *[f"{r}_code" for r in CODE_ROLES], "rt_interpreted_type", "value_type", "minimum",
          "maximum", "unit", "required", "points", "option_code", "pattern", "match"]


def _number_text(value: Any) -> str:
    return "" if value is None else repr(value)


def flat_csv(template: LabelTemplate) -> str:
    """The template as one flat CSV (UTF-8; open it in a spreadsheet, edit, import back)."""
    locales = template.locales()
    columns = _FIXED + [f"name_{loc}" for loc in locales] + [f"definition_{loc}" for loc in locales]
    rows: List[Dict[str, str]] = []

    def localized(row: Dict[str, str], names: Any, prefix: str) -> None:
        for loc, text in names.items():
            row[f"{prefix}_{loc}"] = text

    row = {"record": "template", "template_id": template.id, "version": template.version,
           "modalities": ";".join(template.modalities)}
    localized(row, template.title, "name")
    localized(row, template.description, "definition")
    rows.append(row)
    for label in template.labels:
        row = {"record": "label", "code": label.code, "parent": label.parent or "", "category": label.category,
               "level": label.level, "annotation_types": ";".join(label.annotation_types),
               "value": _number_text(label.value),
               "color": ";".join(map(str, label.color)) if label.color else "",
               "rt_interpreted_type": label.rt_interpreted_type}
        if label.instances is not None:
            row["first_instance_value"] = str(label.instances.first_value)
            row["instance_count"] = str(label.instances.count)
        for key, value in label.structure.items():
            row[key] = value
        for role in CODE_ROLES:
            row[f"{role}_code"] = code_text(label.codes.get(role))
        localized(row, label.names, "name")
        localized(row, label.definition, "definition")
        rows.append(row)
        for attribute in label.attributes:
            row = {"record": "attribute", "code": label.code, "attribute": attribute.key,
                   "value_type": attribute.value_type, "minimum": _number_text(attribute.minimum),
                   "maximum": _number_text(attribute.maximum), "unit": attribute.unit,
                   "required": "true" if attribute.required else "false"}
            localized(row, attribute.names, "name")
            localized(row, attribute.description, "definition")
            rows.append(row)
            for option in attribute.options:
                row = {"record": "option", "code": label.code, "attribute": attribute.key, "option": option.value,
                       "points": _number_text(option.points), "option_code": code_text(option.code)}
                localized(row, option.names, "name")
                rows.append(row)
    for mapping in template.name_mapping:
        rows.append({"record": "mapping", "pattern": mapping.pattern, "match": mapping.match, "code": mapping.code})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return out.getvalue()


class _Row:
    def __init__(self, data: Dict[str, str], line: int, file: Optional[str]) -> None:
        self.data = {k: (v or "") for k, v in data.items() if k is not None}
        self.line = line
        self.file = file

    def get(self, column: str) -> str:
        return self.data.get(column, "").strip()

    def error(self, column: str, rule: str) -> InputError:
        return InputError(rule, file=self.file, field=f"line {self.line}.{column}")

    def integer(self, column: str) -> Optional[int]:
        text = self.get(column)
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise self.error(column, f"{text!r} is not an integer") from None

    def number(self, column: str) -> Optional[float]:
        text = self.get(column)
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise self.error(column, f"{text!r} is not a number") from None

    def localized(self, prefix: str) -> Dict[str, str]:
        return {k[len(prefix) + 1:]: v.strip() for k, v in self.data.items()
                if k.startswith(prefix + "_") and v.strip()}

    def code(self, column: str) -> Optional[Dict[str, str]]:
        text = self.get(column)
        if not text:
            return None
        parts = [p.strip() for p in text.split("|")]
        if len(parts) != 3 or not all(parts):
            raise self.error(column, f"{text!r} must be scheme|value|meaning (e.g. SCT|39607008|Lung)")
        return {"scheme": parts[0], "value": parts[1], "meaning": parts[2]}

    def items(self, column: str) -> List[str]:
        return [p.strip() for p in self.get(column).split(";") if p.strip()]


def template_from_flat_csv(text: str, file: Optional[str] = None) -> LabelTemplate:
    """Read a flat CSV written by :func:`flat_csv` (and edited) back into a validated template."""
    try:
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        rows = [_Row(r, n, file) for n, r in enumerate(reader, start=2)]
    except csv.Error as exc:
        raise InputError(f"not a readable CSV file ({exc})", file=file) from exc
    if "record" not in (reader.fieldnames or []):
        raise InputError("missing column 'record'; not a template flat CSV", file=file, field="header")
    data: Dict[str, Any] = {}
    labels: Dict[str, Dict[str, Any]] = {}
    mappings: List[Dict[str, str]] = []
    for row in rows:
        record = row.get("record")
        if record not in RECORDS:
            raise row.error("record", f"{record!r} is not one of {', '.join(RECORDS)}")
        if record == "template":
            if data:
                raise row.error("record", "a second template row")
            data = {"schema": schema_id("label-template"), "id": row.get("template_id"), "version": row.get("version"),
                    "title": row.localized("name")}
            description = row.localized("definition")
            if description:
                data["description"] = description
            data["modalities"] = row.items("modalities")
        elif record == "label":
            code = row.get("code")
            if code in labels:
                raise row.error("code", f"label {code} is listed twice; rule: codes are unique")
            label: Dict[str, Any] = {"code": code, "names": row.localized("name"), "category": row.get("category"),
                                     "level": row.get("level")}
            if row.get("parent"):
                label["parent"] = row.get("parent")
            if row.localized("definition"):
                label["definition"] = row.localized("definition")
            structure = {k: row.get(k) for k in STRUCTURE_KEYS if row.get(k)}
            if structure:
                label["structure"] = structure
            label["annotation_types"] = row.items("annotation_types")
            if row.get("color"):
                colour = row.items("color")
                try:
                    label["color"] = [int(c) for c in colour]
                except ValueError:
                    raise row.error("color", f"{row.get('color')!r} must be R;G;B integers") from None
            if row.integer("value") is not None:
                label["value"] = row.integer("value")
            if row.get("first_instance_value") or row.get("instance_count"):
                label["instances"] = {"first_value": row.integer("first_instance_value"),
                                      "count": row.integer("instance_count")}
            codes = {role: row.code(f"{role}_code") for role in CODE_ROLES}
            if any(codes.values()):
                label["codes"] = {k: v for k, v in codes.items() if v}
            if row.get("rt_interpreted_type"):
                label["rt_interpreted_type"] = row.get("rt_interpreted_type")
            labels[code] = label
        elif record == "attribute":
            owner = _owner(labels, row)
            attribute: Dict[str, Any] = {"key": row.get("attribute"), "value_type": row.get("value_type")}
            for key, prefix in (("names", "name"), ("description", "definition")):
                if row.localized(prefix):
                    attribute[key] = row.localized(prefix)
            for key in ("minimum", "maximum"):
                if row.number(key) is not None:
                    attribute[key] = row.number(key)
            if row.get("unit"):
                attribute["unit"] = row.get("unit")
            required = row.get("required").lower()
            if required not in ("", "true", "false"):
                raise row.error("required", f"{required!r} must be true or false")
            if required == "true":
                attribute["required"] = True
            owner.setdefault("attributes", []).append(attribute)
        elif record == "option":
            owner = _owner(labels, row)
            target = next((a for a in owner.get("attributes", []) if a["key"] == row.get("attribute")), None)
            if target is None:
                raise row.error("attribute", f"option for unknown attribute {row.get('attribute')!r} of "
                                             f"{row.get('code')}; list the attribute row first")
            option: Dict[str, Any] = {"value": row.get("option")}
            if row.localized("name"):
                option["names"] = row.localized("name")
            if row.integer("points") is not None:
                option["points"] = row.integer("points")
            if row.code("option_code"):
                option["code"] = row.code("option_code")
            target.setdefault("options", []).append(option)
        else:
            mappings.append({"pattern": row.data.get("pattern", ""), "match": row.get("match"),
                             "code": row.get("code")})
    if not data:
        raise InputError("no template row (record = template)", file=file, field="record")
    data["labels"] = list(labels.values())
    if mappings:
        data["name_mapping"] = mappings
    return template_from_dict(data, file=file)


def _owner(labels: Dict[str, Dict[str, Any]], row: _Row) -> Dict[str, Any]:
    code = row.get("code")
    if code not in labels:
        raise row.error("code", f"{row.get('record')} row for unknown label {code!r}; list the label row first")
    return labels[code]
