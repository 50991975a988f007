"""A template in the formats other tools already read (R-5.7): Slicer, dcmqi, nnU-Net.

* :func:`slicer_terminology` - a Slicer terminology context (``.term.json``, the dcmqi
  segment-context format Slicer's ``vtkSlicerTerminologiesModuleLogic`` loads): categories,
  types and type modifiers with recommended colours.
* :func:`slicer_color_table_csv` / :func:`template_from_slicer_csv` - a Slicer colour table CSV
  (``LabelValue,Name,Color_R..A`` and the 15 terminology columns Slicer 5.6+ reads and writes).
  ``Name`` is the label code. Two trailing columns Slicer ignores (``MMAnno_Template`` on the
  background row, ``MMAnno_Label`` on each label row, compact JSON) carry everything else, so
  template -> CSV -> template is exact; a plain Slicer colour table (without those columns)
  imports too, from its standard columns.
* :func:`dcmqi_segmentation_metadata` - the ``segmentAttributes`` JSON of dcmqi's
  ``itkimage2segimage`` (DICOM SEG from a labelmap with the template's values).
* :func:`nnunet_dataset` - nnU-Net v2 ``dataset.json``. nnU-Net requires consecutive label
  indices 0, 1, 2 ...; the template's values are stable but not consecutive, so the labels are
  numbered in value order and ``label_values`` records index -> template value
  (:func:`nnunet_value_map` converts a labelmap; instances fold into their label).
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.labels import Code

from .model import CODE_ROLES, LabelTemplate, TemplateLabel, code_to_dict
from .validation import template_from_dict

SEGMENT_CONTEXT_SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/segment-context-schema.json#"
DCMQI_SEG_SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/seg-schema.json#"
#: Slicer's anatomic context that holds the SNOMED CT regions used by the built-in templates.
SLICER_REGION_CONTEXT = "Anatomic codes - DICOM master list"

SLICER_COLOR_COLUMNS = ["LabelValue", "Name", "Color_R", "Color_G", "Color_B", "Color_A"]
_SLICER_ROLE_PREFIX = {"category": "Category", "type": "Type", "type_modifier": "TypeModifier", "region": "Region",
                       "region_modifier": "RegionModifier"}
SLICER_TERMINOLOGY_COLUMNS = [f"{_SLICER_ROLE_PREFIX[r]}_{part}" for r in CODE_ROLES
                              for part in ("CodingScheme", "CodeValue", "CodeMeaning")]
EXTRA_TEMPLATE_COLUMN = "MMAnno_Template"
EXTRA_LABEL_COLUMN = "MMAnno_Label"
EXPORT_FORMATS = ("slicer-csv", "slicer-term", "dcmqi", "nnunet", "csv")


def _dicom_code(code: Code) -> Dict[str, str]:
    return {"CodeValue": code.value, "CodingSchemeDesignator": code.scheme, "CodeMeaning": code.meaning}


# --------------------------------------------------------------------------- Slicer terminology
def slicer_terminology(template: LabelTemplate, locale: str = "en") -> Dict[str, Any]:
    """The template's labels with a value as a Slicer terminology context (``.term.json``).

    Raises :class:`InputError` when two labels share category, type and modifier (Slicer could
    not tell them apart) or a type is used both with and without a modifier.
    """
    categories: Dict[Tuple[str, str], Dict[str, Any]] = {}
    seen: Dict[Tuple[Any, ...], str] = {}
    for label in template.labelmap_labels():
        category, typ, modifier = (label.codes.get(r) for r in ("category", "type", "type_modifier"))
        assert category is not None and typ is not None  # validation guarantees it for labels with a value
        key = (category.scheme, category.value, typ.scheme, typ.value,
               (modifier.scheme, modifier.value) if modifier else None)
        if key in seen:
            raise InputError(f"{label.code} and {seen[key]} have the same category, type and modifier codes; "
                             "Slicer terminology cannot tell them apart", field=f"labels.{label.code}.codes")
        seen[key] = label.code
        cat = categories.setdefault((category.scheme, category.value), {
            **_dicom_code(category), "showAnatomy": False, "Type": []})
        if label.codes.get("region") is not None:
            cat["showAnatomy"] = True
        entry = {"recommendedDisplayRGBValue": list(label.color or (128, 128, 128)),
                 "3dSlicerLabel": label.display_name(locale), "3dSlicerIntegerLabel": int(label.value or 0)}
        types: List[Dict[str, Any]] = cat["Type"]
        existing = next((t for t in types if (t["CodingSchemeDesignator"], t["CodeValue"]) == (typ.scheme, typ.value)),
                        None)
        if modifier is None:
            if existing is not None:
                raise InputError(f"type {typ.meaning} of {label.code} is used with and without a modifier",
                                 field=f"labels.{label.code}.codes.type_modifier")
            types.append({**_dicom_code(typ), **entry})
            continue
        if existing is None:
            existing = {**_dicom_code(typ), "Modifier": []}
            types.append(existing)
        elif "Modifier" not in existing:
            raise InputError(f"type {typ.meaning} of {label.code} is used with and without a modifier",
                             field=f"labels.{label.code}.codes.type_modifier")
        existing["Modifier"].append({**_dicom_code(modifier), **entry})
    return {
        "SegmentationCategoryTypeContextName": f"{template.title.get(locale) or template.title['en']} "
                                               f"({template.id} {template.version})",
        "@schema": SEGMENT_CONTEXT_SCHEMA,
        "SegmentationCodes": {"Category": list(categories.values())},
    }


def slicer_terminology_entry(template: LabelTemplate, label: TemplateLabel, locale: str = "en") -> str:
    """Slicer's serialized terminology entry of a label (the ``TerminologyEntry`` segment tag):
    ``context~category~type~modifier~regionContext~region~regionModifier``, codes as
    ``scheme^value^meaning``."""
    def part(role: str) -> str:
        code = label.codes.get(role)
        return f"{code.scheme}^{code.value}^{code.meaning}" if code else "^^"

    context = slicer_terminology(template, locale)["SegmentationCategoryTypeContextName"]
    region_context = SLICER_REGION_CONTEXT if label.codes.get("region") else ""
    return "~".join([context, part("category"), part("type"), part("type_modifier"), region_context, part("region"),
                     part("region_modifier")])


# --------------------------------------------------------------------------- Slicer colour table CSV
def _code_cells(label: Optional[TemplateLabel]) -> List[str]:
    cells: List[str] = []
    for role in CODE_ROLES:
        code = label.codes.get(role) if label is not None else None
        cells += [code.scheme, code.value, code.meaning] if code else ["", "", ""]
    return cells


def _compact(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=False)


def slicer_color_table_csv(template: LabelTemplate) -> str:
    """The Slicer colour table CSV of the labels with a value (and a Background row 0)."""
    header_only = {k: v for k, v in template.to_dict().items() if k != "labels"}
    header_only["labels_without_value"] = [label.to_dict() for label in template.labels if label.value is None]
    header_only["label_order"] = template.codes
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SLICER_COLOR_COLUMNS + SLICER_TERMINOLOGY_COLUMNS + [EXTRA_TEMPLATE_COLUMN, EXTRA_LABEL_COLUMN])
    writer.writerow(["0", "Background", "0", "0", "0", "0", *_code_cells(None), _compact(header_only), ""])
    for label in sorted(template.labelmap_labels(), key=lambda lab: int(lab.value or 0)):
        r, g, b = label.color or (128, 128, 128)
        writer.writerow([str(label.value), label.code, str(r), str(g), str(b), "255", *_code_cells(label), "",
                         _compact(label.to_dict())])
    return out.getvalue()


def _read_csv(text: str, file: Optional[str]) -> Tuple[List[str], List[Dict[str, str]]]:
    try:
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        rows = list(reader)
    except csv.Error as exc:
        raise InputError(f"not a readable CSV file ({exc})", file=file) from exc
    return list(reader.fieldnames or []), rows


def _code_from_cells(row: Dict[str, str], role: str, where: str, file: Optional[str]) -> Optional[Code]:
    prefix = _SLICER_ROLE_PREFIX[role]
    parts = [(row.get(f"{prefix}_{p}") or "").strip() for p in ("CodingScheme", "CodeValue", "CodeMeaning")]
    if not any(parts):
        return None
    if not all(parts):
        raise InputError(f"{prefix} code is incomplete ({'^'.join(parts)}); scheme, value and meaning are all needed",
                         file=file, field=f"{where}.{prefix}")
    return Code(*parts)


def _int_cell(row: Dict[str, str], column: str, where: str, file: Optional[str], lo: int, hi: int) -> int:
    text = (row.get(column) or "").strip()
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"{text!r} is not an integer", file=file, field=f"{where}.{column}") from None
    if not lo <= value <= hi:
        raise InputError(f"{value} is outside {lo}..{hi}", file=file, field=f"{where}.{column}")
    return value


def machine_code(name: str) -> str:
    """An UPPER_SNAKE machine code made from a free name (``left kidney`` -> ``LEFT_KIDNEY``)."""
    code = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")
    if not code:
        return ""
    return code if code[0].isalpha() else f"L_{code}"


def template_from_slicer_csv(text: str, file: Optional[str] = None, template_id: str = "imported",
                             version: str = "1.0.0", title: str = "", modalities: Sequence[str] = ("OT",)
                             ) -> LabelTemplate:
    """A template from a Slicer colour table CSV.

    With the ``MMAnno_*`` columns (written by :func:`slicer_color_table_csv`) the template is
    rebuilt exactly; values, colours, names and codes edited in the standard columns win over the
    stored JSON. Without them (any Slicer colour table) each row becomes a label: code from
    ``Name``, English and Chinese names = ``Name`` (translate later), category organ / lesion /
    other from the category code, annotation type mask.
    """
    columns, rows = _read_csv(text, file)
    missing = [c for c in ("LabelValue", "Name") if c not in columns]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}; not a Slicer colour table", file=file,
                         field="header")
    header: Optional[Dict[str, Any]] = None
    labels: Dict[str, Dict[str, Any]] = {}
    order: List[str] = []
    for n, row in enumerate(rows, start=2):
        where = f"line {n}"
        value = _int_cell(row, "LabelValue", where, file, 0, 65535)
        if value == 0:
            if row.get(EXTRA_TEMPLATE_COLUMN):
                header = _json_cell(row[EXTRA_TEMPLATE_COLUMN], where, EXTRA_TEMPLATE_COLUMN, file)
            continue
        stored = _json_cell(row[EXTRA_LABEL_COLUMN], where, EXTRA_LABEL_COLUMN, file) \
            if row.get(EXTRA_LABEL_COLUMN) else None
        name = (row.get("Name") or "").strip()
        colour = [_int_cell(row, c, where, file, 0, 255) if (row.get(c) or "").strip() else 128
                  for c in ("Color_R", "Color_G", "Color_B")]
        codes = {role: _code_from_cells(row, role, where, file) for role in CODE_ROLES}
        if stored is None:
            code = machine_code(name) or f"LABEL_{value}"
            category_code = codes.get("category")
            category = "other"
            if category_code is not None and category_code.value == "123037004":
                category = "organ"
            elif category_code is not None and category_code.value == "49755003":
                category = "lesion"
            stored = {"code": code, "names": {"en": name or code, "zh": name or code}, "category": category,
                      "level": "organ" if category == "organ" else "feature", "annotation_types": ["mask"]}
        stored["value"] = value
        stored["color"] = colour
        stored["codes"] = {role: code_to_dict(c) for role, c in codes.items() if c is not None}
        if not stored["codes"]:
            del stored["codes"]
        if stored["code"] in labels:
            raise InputError(f"label {stored['code']} appears twice", file=file, field=f"{where}.Name")
        labels[stored["code"]] = stored
        order.append(stored["code"])
    if header is not None:
        for label in header.pop("labels_without_value", []):
            labels.setdefault(label["code"], label)
        wanted = header.pop("label_order", [])
        order = [c for c in wanted if c in labels] + [c for c in order if c not in wanted]
        data = dict(header)
    else:
        data = {"schema": "", "id": template_id, "version": version,
                "title": {"en": title or template_id, "zh": title or template_id}, "modalities": list(modalities)}
    from ..schemas import schema_id

    data["schema"] = schema_id("label-template")
    data["labels"] = [labels[c] for c in order]
    if "name_mapping" in data:  # keep the key after labels, as to_dict writes it
        data["name_mapping"] = data.pop("name_mapping")
    return template_from_dict(data, file=file)


def _json_cell(text: str, where: str, column: str, file: Optional[str]) -> Dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", file=file, field=f"{where}.{column}") from exc
    if not isinstance(data, dict):
        raise InputError("must be a JSON object", file=file, field=f"{where}.{column}")
    return data


# --------------------------------------------------------------------------- dcmqi
def dcmqi_segmentation_metadata(template: LabelTemplate, values: Optional[Iterable[int]] = None, *,
                                series_description: str = "", creator: str = "MultiModalAnnotation",
                                algorithm_type: str = "MANUAL", body_part: str = "") -> Dict[str, Any]:
    """dcmqi ``itkimage2segimage`` metadata for one labelmap that uses the template's values.

    ``values`` restricts the segments to the values present in the labelmap (instance values
    such as 12 = ``METASTASIS_2`` included); by default every label with a value is listed.
    """
    label_set = template.to_label_set()
    wanted = sorted(set(values)) if values is not None else [int(lab.value or 0) for lab in template.labelmap_labels()]
    segments = []
    for value in wanted:
        info = label_set.by_value(value)
        if info is None:
            raise InputError(f"labelmap value {value} is not a label of template {template.id}", field="values")
        assert info.category is not None and info.type is not None
        segment: Dict[str, Any] = {
            "labelID": value,
            "SegmentLabel": info.name[:64],
            "SegmentDescription": info.code[:64],
            "SegmentAlgorithmType": algorithm_type,
            "SegmentedPropertyCategoryCodeSequence": _dicom_code(info.category),
            "SegmentedPropertyTypeCodeSequence": _dicom_code(info.type),
            "recommendedDisplayRGBValue": list(info.color),
        }
        if algorithm_type != "MANUAL":
            segment["SegmentAlgorithmName"] = creator[:64]
        if info.type_modifier is not None:
            segment["SegmentedPropertyTypeModifierCodeSequence"] = _dicom_code(info.type_modifier)
        if info.anatomic_region is not None:
            segment["AnatomicRegionSequence"] = _dicom_code(info.anatomic_region)
            if info.anatomic_region_modifier is not None:
                segment["AnatomicRegionModifierSequence"] = _dicom_code(info.anatomic_region_modifier)
        segments.append(segment)
    return {
        "@schema": DCMQI_SEG_SCHEMA,
        "ContentCreatorName": creator[:64],
        "ClinicalTrialSeriesID": "1",
        "ClinicalTrialTimePointID": "1",
        "ClinicalTrialCoordinatingCenterName": "MultiModalAnnotation",
        "SeriesDescription": (series_description or f"{template.id} {template.version}")[:64],
        "SeriesNumber": "300",
        "InstanceNumber": "1",
        "BodyPartExamined": body_part[:16],
        "ContentLabel": "SEGMENTATION",
        "ContentDescription": f"Labels of template {template.id} {template.version}"[:64],
        "segmentAttributes": [segments],
    }


# --------------------------------------------------------------------------- nnU-Net
def nnunet_value_map(template: LabelTemplate) -> Dict[int, int]:
    """Template labelmap value -> nnU-Net label index (instances map to their label's index)."""
    index = {label.code: n for n, label in enumerate(
        sorted(template.labelmap_labels(), key=lambda lab: int(lab.value or 0)), start=1)}
    mapping: Dict[int, int] = {}
    for label in template.labelmap_labels():
        mapping[int(label.value or 0)] = index[label.code]
        if label.instances is not None:
            for n in range(1, label.instances.count + 1):
                mapping[label.instances.value_of(n)] = index[label.code]
    return mapping


def nnunet_dataset(template: LabelTemplate, channel_names: Optional[Sequence[str]] = None,
                   num_training: int = 0, file_ending: str = ".nii.gz") -> Dict[str, Any]:
    """nnU-Net v2 ``dataset.json`` (``labels`` consecutive from background 0)."""
    ordered = sorted(template.labelmap_labels(), key=lambda lab: int(lab.value or 0))
    channels = list(channel_names or template.modalities[:1])
    return {
        "channel_names": {str(n): name for n, name in enumerate(channels)},
        "labels": {"background": 0, **{label.code: n for n, label in enumerate(ordered, start=1)}},
        "numTraining": int(num_training),
        "file_ending": file_ending,
        "name": template.id,
        "description": template.title.get("en", template.id),
        "reference": f"MultiModalAnnotation label template {template.id} {template.version}",
        "label_values": {str(n): int(label.value or 0) for n, label in enumerate(ordered, start=1)},
        "label_instances": {label.code: label.instances.to_dict() for label in ordered if label.instances},
    }
