"""Seed 001 and seed 004 tables <-> annotations (R-001, R-004, R-8.4.3).

Seed 001 (lung radiomics)
-------------------------
The clinical table gives each tumour's position as ``X``, ``Y`` - pixels of its slice with the
origin at the top-left pixel, x to the right, y down - and ``Z``, the 1-based slice number
("第一张 z=1"). In this project's image model the stored pixel column is ``i``, the row ``j`` and
the slice (in ascending position order, :class:`RTSSBridgeLib.geometry.ImageGeometry`) ``k``, so a
tumour is the voxel ``(i, j, k) = (X, Y, Z - 1)`` and its physical point is
``ImageGeometry.ijk_to_lps`` of it - exact on oblique and anisotropic grids, because the document
keeps the point in voxel indices and every physical value is derived. Decision where the seed is
silent: ``Z`` counts slices in ascending position order (the order of ``k``; the ``ct-chest``
sample's ``z``), not InstanceNumber, which many scanners number head to feet.

:func:`import_seed001_clinical` turns each row of the case into a point annotation of label
``NODULE`` (instance = ``Order``; malignancy, pathology type, TNM and stage as template attributes)
and binds the row to it; :func:`export_seed001_clinical` writes the table back, with X, Y, Z read
from the (possibly moved) point annotations.

Seed 004 (rheumatoid arthritis)
-------------------------------
The score sheet's ``erosion_<JOINT>`` (0-5) and ``JSN_<JOINT>`` (0-4) columns become attribute
annotations of the ``ra-hand-foot-mtss`` template (one per joint, id ``<JOINT>_SCORE``, attributes
``erosion``/``jsn``), the orientation flags and the totals an attribute annotation of
``MTSS_CASE``; hand and foot exams are bound to the case by their accession numbers ``REQ_H`` and
``REQ_F``. :func:`export_seed004_scores` reads the scores back from the annotations; when a joint
is also annotated as a point carrying scores (the ``xray-ra`` sample's ``JOINT_<code>``), the two
must agree, or the export names both.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry

from .documents import Annotation, AnnotationDocument
from .structured import (
    DEFAULT_TIME_DEVIATION_DAYS,
    CaseKeys,
    Record,
    Table,
    add_table,
    column_letter,
    structured_section,
    table_from_document,
)
from .templates import LabelTemplate

CLINICAL = "seed001-clinical"
FOLLOW_UP = "seed001-follow-up"
MTSS = "seed004-mtss"
NODULE = "NODULE"
_MALIGNANCY = {"良性": "benign", "恶性": "malignant", "benign": "benign", "malignant": "malignant"}
_TNM = re.compile(r"^(T(?:X|0|is|1mi|1a|1b|1c|2a|2b|3|4))(N[X0-3])(M(?:0|1a|1b|1c))$")
#: A physical point converts back to a pixel only when it is this close to a voxel centre (in voxels).
ON_VOXEL_TOLERANCE = 1e-6


# --------------------------------------------------------------------------- seed 001 positions
def position_to_ijk(x: float, y: float, z: int) -> Tuple[float, float, float]:
    """Seed 001 ``(x, y, z)`` -> continuous voxel index ``(i, j, k)`` (``k = z - 1``)."""
    return float(x), float(y), float(z - 1)


def position_to_lps(x: float, y: float, z: int, geometry: ImageGeometry) -> np.ndarray:
    """The physical (LPS, mm) point of a seed 001 position on ``geometry``; refuses a position
    outside the image."""
    ijk = np.array(position_to_ijk(x, y, z))
    nx, ny, nz = geometry.shape
    if not (0 <= ijk[0] <= nx - 1 and 0 <= ijk[1] <= ny - 1 and 0 <= ijk[2] <= nz - 1):
        raise InputError(f"position x={x}, y={y}, z={z} is outside the image ({nx} x {ny} pixels, {nz} slices); "
                         "rule: 0 <= x < columns, 0 <= y < rows, 1 <= z <= slices", field="X/Y/Z")
    return geometry.ijk_to_lps(ijk)


def lps_to_position(lps: Sequence[float], geometry: ImageGeometry) -> Tuple[int, int, int]:
    """Seed 001 ``(x, y, z)`` of a physical point; the point must be on a voxel centre (within
    :data:`ON_VOXEL_TOLERANCE` voxels), so that the conversion is exact both ways."""
    ijk = geometry.lps_to_ijk(np.asarray(lps, dtype=float))
    return ijk_to_position([float(v) for v in ijk])


def ijk_to_position(ijk: Sequence[float]) -> Tuple[int, int, int]:
    """Seed 001 ``(x, y, z)`` of a voxel index; refuses a point between voxel centres."""
    rounded = np.rint(np.asarray(ijk, dtype=float))
    if np.max(np.abs(rounded - np.asarray(ijk, dtype=float))) > ON_VOXEL_TOLERANCE:
        raise InputError(f"point {list(np.round(np.asarray(ijk, dtype=float), 4))} is not on a pixel centre; rule: "
                         "seed 001 positions are whole pixels and slices (move the point onto a voxel)",
                         field="point")
    i, j, k = (int(v) for v in rounded)
    return i, j, k + 1


def _option(template: LabelTemplate, code: str, key: str, text: Any) -> Optional[str]:
    """The template enum value whose value or localized name is ``text``."""
    label = template.get(code)
    attribute = label.attribute(key) if label is not None else None
    if attribute is None or text is None:
        return None
    for option in attribute.options:
        if str(text).strip().lower() in {option.value.lower(), *(n.lower() for n in option.names.values())}:
            return option.value
    return None


def _nodule_attributes(values: Dict[str, Any], template: LabelTemplate) -> Dict[str, Any]:
    attributes: Dict[str, Any] = {}
    malignancy = _MALIGNANCY.get(str(values.get("分类")))
    if malignancy:
        attributes["malignancy"] = malignancy
    pathology = _option(template, NODULE, "pathology_type", values.get("病理分型"))
    if pathology:
        attributes["pathology_type"] = pathology
    match = _TNM.match(str(values.get("TNM分期") or ""))
    if match:
        for key, part in zip(("tnm_t", "tnm_n", "tnm_m"), match.groups()):
            if _option(template, NODULE, key, part):
                attributes[key] = part
    stage = _option(template, NODULE, "clinical_stage", values.get("临床分期"))
    if stage:
        attributes["clinical_stage"] = stage
    return attributes


def nodule_point_id(order: int) -> str:
    return f"NODULE_{order:02d}_POINT"


def import_seed001_clinical(document: AnnotationDocument, table: Table, keys: CaseKeys, template: LabelTemplate,
                            threshold_days: int = DEFAULT_TIME_DEVIATION_DAYS) -> AnnotationDocument:
    """Bind the case's rows of a seed 001 clinical table to ``document`` and add one point
    annotation per tumour at ``(X, Y, Z - 1)``; a position outside the image is refused with its
    row and columns."""
    if template.get(NODULE) is None:
        raise InputError(f"template {template.id} has no {NODULE} label", field="template")
    geometry = document.image.geometry
    rows = {r.row: r for r in table.records}
    bound = add_table(document, table, keys, threshold_days)
    records = next(t for t in structured_section(bound)["tables"] if t["id"] == table.id)["records"]
    taken = {a.id for a in document.annotations}
    annotations = list(document.annotations)
    ids: Dict[int, str] = {}
    columns = {name: column_letter(n) for n, name in enumerate(table.columns)}
    for entry in records:
        record = rows[entry["row"]]
        v = record.values
        try:
            position_to_lps(v["X"], v["Y"], v["Z"], geometry)
        except InputError as exc:
            raise InputError(f"row {record.row}, columns {columns['X']}-{columns['Z']} (X, Y, Z): {exc.rule}",
                             file=str(table.source.get("file", "")) or None, field="X/Y/Z") from None
        ident = nodule_point_id(int(v["Order"]))
        if ident in taken:
            raise InputError(f"row {record.row}: annotation {ident} already exists", field="annotations.id")
        taken.add(ident)
        point = list(position_to_ijk(v["X"], v["Y"], v["Z"]))
        data: Dict[str, Any] = {"point": point}
        attributes = _nodule_attributes(dict(v), template)
        if attributes:
            data["attributes"] = attributes
        annotations.append(Annotation(ident, "lesion", NODULE, "point", data, instance=int(v["Order"])))
        ids[record.row] = ident
    document = document.replace(annotations=annotations)
    return add_table(document, table, keys, threshold_days, annotation_ids=ids)


def export_seed001_clinical(document: AnnotationDocument) -> Table:
    """The clinical table of the document, X/Y/Z read back from the tumours' point annotations."""
    table = table_from_document(document, CLINICAL)
    raw = next(t for t in structured_section(document)["tables"] if t["id"] == CLINICAL)
    by_row = {r["row"]: r.get("annotation_id") for r in raw["records"]}
    records: List[Record] = []
    for record in table.records:
        values = dict(record.values)
        ident = by_row.get(record.row)
        if ident:
            annotation = document.annotation(ident)
            x, y, z = ijk_to_position(annotation.data["point"])
            values.update({"X": x, "Y": y, "Z": z})
        records.append(replace(record, values=values))
    return replace(table, records=tuple(records))


# --------------------------------------------------------------------------- seed 004 scores
def _joint_columns(table_columns: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """joint code -> {attribute key: column} for the erosion_/JSN_ columns."""
    joints: Dict[str, Dict[str, str]] = {}
    for column in table_columns:
        for prefix, key in (("erosion_", "erosion"), ("JSN_", "jsn")):
            if column.startswith(prefix):
                joints.setdefault(column[len(prefix):], {})[key] = column
    return joints


def score_annotations(values: Dict[str, Any], columns: Sequence[str], template: LabelTemplate) -> List[Annotation]:
    """Attribute annotations of one score-sheet row (joints in template order, then MTSS_CASE)."""
    joints = _joint_columns(columns)
    unknown = sorted(code for code in joints if template.get(code) is None)
    if unknown:
        raise InputError(f"score columns name joints that template {template.id} does not have: "
                         f"{', '.join(unknown[:5])}", field="columns")
    out: List[Annotation] = []
    totals = {"erosion": 0, "jsn": 0}
    for label in template.labels:
        if label.code not in joints:
            continue
        attributes = {key: values[column] for key, column in sorted(joints[label.code].items())
                      if values.get(column) is not None}
        for key, value in attributes.items():
            totals[key] += int(value)
        out.append(Annotation(f"{label.code}_SCORE", label.category, label.code, "attribute",
                              {"attributes": attributes}))
    case = template.get("MTSS_CASE")
    if case is not None:
        attributes = {"total_erosion": totals["erosion"], "total_jsn": totals["jsn"],
                      "total_mtss": totals["erosion"] + totals["jsn"]}
        for column, key in (("Abnormal_orientation_H", "abnormal_orientation_hand"),
                            ("Abnormal_orientation_F", "abnormal_orientation_foot")):
            if values.get(column) is not None:
                attributes[key] = values[column]
        out.append(Annotation("MTSS_CASE", case.category, case.code, "attribute", {"attributes": attributes}))
    return out


def import_seed004_scores(document: AnnotationDocument, table: Table, keys: CaseKeys, template: LabelTemplate,
                          threshold_days: int = DEFAULT_TIME_DEVIATION_DAYS) -> AnnotationDocument:
    """Bind the case's score-sheet row (by case number and accession numbers) and add its scores as
    attribute annotations of the RA template; exactly one row must belong to the case."""
    bound = add_table(document, table, keys, threshold_days)
    records = next(t for t in structured_section(bound)["tables"] if t["id"] == table.id)["records"]
    if len(records) != 1:
        raise InputError(f"{len(records)} score rows belong to case {keys.case_id} (rows "
                         f"{', '.join(str(r['row']) for r in records)}); rule: one row per case", field="keys")
    new = score_annotations(records[0]["values"], table.columns, template)
    clash = {a.id for a in new} & {a.id for a in document.annotations}
    if clash:
        raise InputError(f"the document already has score annotations ({', '.join(sorted(clash)[:3])})",
                         field="annotations.id")
    return bound.replace(annotations=[*bound.annotations, *new])


def export_seed004_scores(document: AnnotationDocument) -> Table:
    """The score sheet of the document, every score and orientation flag read back from the annotations."""
    table = table_from_document(document, MTSS)
    joints = _joint_columns(table.columns)
    by_id = {a.id: a for a in document.annotations}
    records: List[Record] = []
    for record in table.records:
        values = dict(record.values)
        for code, columns in joints.items():
            annotation = by_id.get(f"{code}_SCORE")
            if annotation is None:
                raise InputError(f"no annotation {code}_SCORE for the score columns of {code}", field="annotations")
            for key, column in columns.items():
                values[column] = annotation.attributes.get(key)
                others = [a for a in document.annotations if a.label_code == code and a.id != annotation.id
                          and key in a.attributes and a.attributes[key] != values[column]]
                if others:  # the joint's point carries a different score: say so, never pick one silently
                    raise InputError(f"{code} {key}: {annotation.id} says {values[column]}, {others[0].id} says "
                                     f"{others[0].attributes[key]}; rule: one score per joint", field="annotations")
        case = by_id.get("MTSS_CASE")
        if case is not None:
            for column, key in (("Abnormal_orientation_H", "abnormal_orientation_hand"),
                                ("Abnormal_orientation_F", "abnormal_orientation_foot")):
                if column in values:
                    values[column] = case.attributes.get(key)
        records.append(replace(record, values=values))
    return replace(table, records=tuple(records))
