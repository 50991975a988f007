"""Annotation documents (R-6.11, Appendix B and C): the structured annotation of one image.

JSON form: the ``annotation`` schema v1 (Appendix C): ``task_id``, ``template`` {id, version},
``image`` {uid, modality, shape, spacing, origin, direction} (DICOM LPS; direction rows, columns =
i, j, k axes), ``annotations[]`` {id, category, label_code, type, instance?, uncertain?, data:
mask_file (+ mask_value) | bbox (+ slice_index) | polygon + slice_index | point | attributes |
cross_modal_links[]} and ``metadata`` {annotator, reviewer, institution, software {name, version,
ai_model}, timestamps {start, end}, qc {status, issues}, version, audit[]}.

Geometry in ``data`` is in continuous voxel indices (i, j, k) of the document's image (voxel
centres at integers; Appendix B.3 "pixel or voxel coordinates"): a 2-D box is
``[x_min, y_min, x_max, y_max]`` on ``slice_index``, a 3-D box ``[i0, j0, k0, i1, j1, k1]``
(inclusive centre bounds), a polygon ``[[x, y], ...]`` on ``slice_index``, a point ``[i, j, k]``.
Conversions to patient or scene coordinates go through :class:`RTSSBridgeLib.geometry.ImageGeometry`.

Readers: :func:`read_document` takes the Appendix C form, the C.5 flat variant (``mask_file`` /
``bbox`` beside ``type`` instead of inside ``data``) and the Appendix B form (``image_id``,
``label``, ``mask_file``, ``annotator``, ``timestamp``), which it converts.

Checks: :func:`document_problems_against_template` (codes exist, category matches, type allowed,
instance in range, attributes known and valid, required attributes given) and
:func:`document_problems_against_geometry` (boxes, polygons and points inside the image; mask
files inside the package, readable, on the image's grid). Each problem is one line.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from RTSSBridgeLib.errors import InputError, ProblemListError
from RTSSBridgeLib.geometry import ImageGeometry, lps_map_to_ras

from .schemas import read_json, schema_id, schema_problems
from .templates import LabelTemplate
from .templates.exports import machine_code

SCHEMA = "annotation"
SCHEMA_APPENDIX_B = "annotation-appendix-b"
#: A mask written to NIfTI-1 has a float32 affine: its grid may differ from the image's by this much.
MASK_GRID_TOLERANCE_MM = 1e-3
_GEOMETRY_KEYS = ("mask_file", "mask_value", "bbox", "polygon", "slice_index", "point", "attributes",
                  "cross_modal_links")


class DocumentError(ProblemListError):
    """An annotation document breaks rules; ``problems`` lists each on one line."""

    hint = "run mmanno annotation validate"


@dataclass(frozen=True)
class ImageRef:
    """The annotated image: its id, modality and voxel grid."""

    uid: str
    modality: str
    geometry: ImageGeometry
    frame_of_reference_uid: str = ""
    series_key: str = ""

    def to_dict(self) -> Dict[str, Any]:
        g = self.geometry
        data: Dict[str, Any] = {"uid": self.uid, "modality": self.modality, "shape": list(g.shape),
                                "spacing": list(g.spacing_mm), "origin": list(g.origin_lps),
                                "direction": [list(r) for r in g.direction], "coordinate_system": "LPS"}
        if self.frame_of_reference_uid:
            data["frame_of_reference_uid"] = self.frame_of_reference_uid
        if self.series_key:
            data["series_key"] = self.series_key
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageRef:
        geometry = ImageGeometry(tuple(data["shape"]), tuple(data["spacing"]), tuple(data["origin"]),
                                 tuple(tuple(r) for r in data["direction"]))  # type: ignore[arg-type]
        return cls(str(data["uid"]), str(data["modality"]), geometry, str(data.get("frame_of_reference_uid", "")),
                   str(data.get("series_key", "")))


@dataclass(frozen=True)
class Annotation:
    """One annotation object (Appendix C.3); ``data`` is the JSON payload."""

    id: str
    category: str
    label_code: str
    type: str
    data: Mapping[str, Any]
    instance: Optional[int] = None
    uncertain: bool = False

    @property
    def attributes(self) -> Dict[str, Any]:
        return dict(self.data.get("attributes", {}))

    @property
    def mask_file(self) -> Optional[str]:
        value = self.data.get("mask_file")
        return None if value is None else str(value)

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"id": self.id, "category": self.category, "label_code": self.label_code,
                                "type": self.type}
        if self.instance is not None:
            data["instance"] = self.instance
        if self.uncertain:
            data["uncertain"] = True
        data["data"] = copy.deepcopy(dict(self.data))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Annotation:
        return cls(str(data["id"]), str(data["category"]), str(data["label_code"]), str(data["type"]),
                   copy.deepcopy(dict(data["data"])), data.get("instance"), bool(data.get("uncertain", False)))

    def with_data(self, **changes: Any) -> Annotation:
        payload = copy.deepcopy(dict(self.data))
        for key, value in changes.items():
            if value is None:
                payload.pop(key, None)
            else:
                payload[key] = value
        return Annotation(self.id, self.category, self.label_code, self.type, payload, self.instance, self.uncertain)


@dataclass(frozen=True)
class AnnotationDocument:
    """An annotation document (Appendix C). ``metadata`` is the JSON metadata object."""

    task_id: str
    template_id: str
    template_version: str
    image: ImageRef
    annotations: Tuple[Annotation, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Image-text links (R-8.4.2): the ``report_links`` JSON section (:mod:`.links`), or None.
    report_links: Optional[Mapping[str, Any]] = None
    #: Image-structured data (R-8.4.3): the ``structured_data`` JSON section (:mod:`.structured`), or None.
    structured_data: Optional[Mapping[str, Any]] = None
    #: The image-image fusion record (R-8.4.1.2, 8.4.1.6; :mod:`.fusion.record`), or None.
    fusion: Optional[Mapping[str, Any]] = None

    def annotation(self, annotation_id: str) -> Annotation:
        for item in self.annotations:
            if item.id == annotation_id:
                return item
        raise InputError(f"no annotation {annotation_id!r}", field="annotations.id")

    def to_dict(self) -> Dict[str, Any]:
        data = {"schema": schema_id(SCHEMA), "task_id": self.task_id,
                "template": {"id": self.template_id, "version": self.template_version},
                "image": self.image.to_dict(), "annotations": [a.to_dict() for a in self.annotations],
                "metadata": copy.deepcopy(dict(self.metadata))}
        if self.report_links is not None:
            data["report_links"] = copy.deepcopy(dict(self.report_links))
        if self.structured_data is not None:
            data["structured_data"] = copy.deepcopy(dict(self.structured_data))
        if self.fusion is not None:
            data["fusion"] = copy.deepcopy(dict(self.fusion))
        return data

    def replace(self, **changes: Any) -> AnnotationDocument:
        values: Dict[str, Any] = {"task_id": self.task_id, "template_id": self.template_id,
                                  "template_version": self.template_version, "image": self.image,
                                  "annotations": self.annotations, "metadata": self.metadata,
                                  "report_links": self.report_links, "structured_data": self.structured_data,
                                  "fusion": self.fusion}
        values.update(changes)
        values["annotations"] = tuple(values["annotations"])
        return AnnotationDocument(**values)


# --------------------------------------------------------------------------- reading
def _timestamp_problems(data: Mapping[str, Any]) -> List[str]:
    problems = []
    meta = data.get("metadata", {})
    stamps = [("metadata.timestamps.start", meta.get("timestamps", {}).get("start")),
              ("metadata.timestamps.end", meta.get("timestamps", {}).get("end"))]
    stamps += [(f"metadata.audit[{n}].time", e.get("time")) for n, e in enumerate(meta.get("audit", []))]
    parsed = {}
    for where, text in stamps:
        if text is None:
            continue
        value = parse_time(text)
        if value is None:
            problems.append(f"{where}: {text!r} is not an ISO 8601 date-time with a time zone")
        parsed[where] = value
    start, end = parsed.get("metadata.timestamps.start"), parsed.get("metadata.timestamps.end")
    if start is not None and end is not None and end < start:
        problems.append("metadata.timestamps.end: ends before it starts; rule: start <= end")
    return problems


def parse_time(text: str) -> Optional[_dt.datetime]:
    """An aware datetime from ISO 8601 text ending in Z or an offset (None when it is not one)."""
    try:
        value = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def now_utc() -> str:
    """The time stamp written by this package (UTC, seconds, ``Z``): the one place for it."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def document_problems(data: Any) -> List[str]:
    """Schema and internal-consistency problems of Appendix C document data."""
    problems = schema_problems(SCHEMA, data)
    if problems:
        return problems
    problems += _timestamp_problems(data)
    try:
        ImageRef.from_dict(data["image"])
    except InputError as exc:
        problems.append(f"image.{exc.field or 'geometry'}: {exc.rule}")
    ids: Dict[str, int] = {}
    for n, item in enumerate(data["annotations"]):
        if item["id"] in ids:
            problems.append(f"annotations[{n}].id: duplicate id {item['id']} (also annotations[{ids[item['id']]}]); "
                            "rule: annotation ids are unique")
        ids.setdefault(item["id"], n)
    for n, item in enumerate(data["annotations"]):
        problems += _payload_problems(f"annotations[{n}]", item)
    if data.get("report_links") is not None:
        from .links import report_links_problems

        problems += report_links_problems(data["report_links"], data["annotations"])
    if data.get("structured_data") is not None:
        from .structured import structured_data_problems

        problems += structured_data_problems(data["structured_data"], data["annotations"])
    problems += _fusion_problems(data.get("fusion"))
    return problems


def _fusion_problems(fusion: Optional[Mapping[str, Any]]) -> List[str]:
    """Internal consistency of the fusion record (the schema checked its form)."""
    if fusion is None:
        return []
    problems = []
    reference = fusion["reference"]["series_key"]
    keys: Dict[str, int] = {}
    for n, item in enumerate(fusion["moving"]):
        at = f"fusion.moving[{n}]"
        if item["series_key"] == reference:
            problems.append(f"{at}.series_key: {reference} is the reference; rule: the reference is not registered")
        if item["series_key"] in keys:
            problems.append(f"{at}.series_key: {item['series_key']} listed twice (also fusion.moving"
                            f"[{keys[item['series_key']]}])")
        keys.setdefault(item["series_key"], n)
        reason = unsafe_path_reason(item["transform_file"])
        if reason:
            problems.append(f"{at}.transform_file: {reason}")
        for name in ("matrix_lps", "matrix_ras"):
            m = np.asarray(item[name], dtype=float)
            if not np.all(np.isfinite(m)) or not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
                problems.append(f"{at}.{name}: last row must be [0, 0, 0, 1] and all numbers finite")
        if not problems and not np.allclose(lps_map_to_ras(item["matrix_lps"]), item["matrix_ras"], atol=1e-6):
            problems.append(f"{at}.matrix_ras: is not matrix_lps written in RAS (diag(-1,-1,1,1) M diag(-1,-1,1,1))")
    known = {reference, *keys}
    for n, item in enumerate(fusion.get("consistency", [])):
        for side in ("reference_series", "other_series"):
            if item[side] not in known:
                problems.append(f"fusion.consistency[{n}].{side}: {item[side]} is neither the reference nor a "
                                "registered series")
    if "preview_file" in fusion:
        reason = unsafe_path_reason(fusion["preview_file"])
        if reason:
            problems.append(f"fusion.preview_file: {reason}")
    return problems


def _payload_problems(at: str, item: Mapping[str, Any]) -> List[str]:
    kind, payload = item["type"], item["data"]
    need = {"mask": ("mask_file",), "bbox": ("bbox",), "polygon": ("polygon", "slice_index"), "point": ("point",),
            "attribute": ("attributes",)}[kind]
    problems = [f"{at}.data.{key}: a {kind} annotation needs {key}" for key in need if key not in payload]
    foreign = [k for k in ("mask_file", "bbox", "polygon", "point") if k in payload and k not in need]
    problems += [f"{at}.data.{k}: a {kind} annotation has no {k}; rule: one geometry per annotation" for k in foreign]
    if "mask_value" in payload and kind != "mask":
        problems.append(f"{at}.data.mask_value: only mask annotations have a mask_value")
    if "slice_index" in payload and kind not in ("polygon", "bbox"):
        problems.append(f"{at}.data.slice_index: only polygons and 2-D boxes have a slice_index")
    if kind == "bbox" and "bbox" in payload:
        box = payload["bbox"]
        if len(box) not in (4, 6):
            problems.append(f"{at}.data.bbox: {len(box)} numbers; rule: 4 (2-D with slice_index) or 6 (3-D)")
        elif len(box) == 4 and "slice_index" not in payload:
            problems.append(f"{at}.data.slice_index: a 2-D box needs its slice_index")
        elif len(box) == 6 and "slice_index" in payload:
            problems.append(f"{at}.data.slice_index: a 3-D box has no slice_index")
        else:
            half = len(box) // 2
            if any(box[d] > box[d + half] for d in range(half)):
                problems.append(f"{at}.data.bbox: {box} has a minimum above its maximum; rule: [min..., max...]")
    for key in ("bbox", "polygon", "point"):
        if key in payload and not all(np.isfinite(np.asarray(payload[key], dtype=float)).ravel()):
            problems.append(f"{at}.data.{key}: not finite")
    if "mask_file" in payload:
        problem = unsafe_path_reason(payload["mask_file"])
        if problem:
            problems.append(f"{at}.data.mask_file: {problem}")
    return problems


def unsafe_path_reason(relative: str) -> Optional[str]:
    """Why a package-relative path is unsafe (absolute, drive letter, backslash, ``..``), or None."""
    text = str(relative)
    if not text or text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
        return f"{text!r} is absolute; rule: paths are relative to the package"
    if "\\" in text:
        return f"{text!r} uses backslashes; rule: POSIX relative paths"
    if any(part in ("..", "") for part in text.split("/")):
        return f"{text!r} leaves the package or has an empty part; rule: no '..' in paths"
    return None


def resolve_inside(root: Path, relative: str) -> Path:
    """``root/relative`` after checking that it stays inside ``root`` (also through links)."""
    reason = unsafe_path_reason(relative)
    if reason:
        raise InputError(reason, file=str(root), field="path")
    base = root.resolve()
    target = (root / relative).resolve()
    if target != base and base not in target.parents:
        raise InputError(f"{relative!r} resolves to {target}, outside the package (a link points out); "
                         "rule: files stay inside the package", file=str(root), field="path")
    return root / relative


def document_from_dict(data: Any, file: Optional[str] = None) -> AnnotationDocument:
    """Validate Appendix C data and build the document (raises :class:`DocumentError`)."""
    problems = document_problems(data)
    if problems:
        raise DocumentError(problems, file=file)
    return AnnotationDocument(
        task_id=data["task_id"], template_id=data["template"]["id"], template_version=data["template"]["version"],
        image=ImageRef.from_dict(data["image"]),
        annotations=tuple(Annotation.from_dict(a) for a in data["annotations"]),
        metadata=copy.deepcopy(data["metadata"]), report_links=copy.deepcopy(data.get("report_links")),
        structured_data=copy.deepcopy(data.get("structured_data")),
        fusion=copy.deepcopy(data["fusion"]) if "fusion" in data else None)


def _is_appendix_b(data: Any) -> bool:
    return isinstance(data, dict) and "image_id" in data and "image" not in data


def normalise_flat_annotations(data: Dict[str, Any]) -> Dict[str, Any]:
    """Move C.5-style payload keys (``mask_file`` beside ``type``) into ``data``."""
    out = copy.deepcopy(data)
    for item in out.get("annotations", []) if isinstance(out.get("annotations"), list) else []:
        if isinstance(item, dict) and "data" not in item:
            item["data"] = {k: item.pop(k) for k in list(item) if k in _GEOMETRY_KEYS}
    if isinstance(out, dict) and "schema" not in out and "task_id" in out:
        out["schema"] = schema_id(SCHEMA)
    return out


def from_appendix_b(data: Any, base_dir: Optional[Path] = None, template: Optional[LabelTemplate] = None,
                    file: Optional[str] = None) -> AnnotationDocument:
    """Convert an Appendix B document. Its grid has no shape: it is taken from the first mask file
    (read from ``base_dir``); labels are mapped through ``template`` when given."""
    problems = schema_problems(SCHEMA_APPENDIX_B, data)
    if problems:
        raise DocumentError(problems, file=file)
    shape = None
    for item in data["annotations"]:
        if item.get("mask_file") and base_dir is not None:
            from RTSSBridgeLib.nifti import read_nifti_geometry

            shape = read_nifti_geometry(resolve_inside(base_dir, item["mask_file"])).shape
            break
    if shape is None:
        raise DocumentError(["image.shape: an Appendix B document has no image shape and no readable mask file "
                             "to take it from"], file=file)
    image = ImageRef(str(data["image_id"]), str(data.get("modality", "OT")),
                     ImageGeometry(shape, tuple(data.get("spacing", (1.0, 1.0, 1.0))),
                                   tuple(data.get("origin", (0.0, 0.0, 0.0))),
                                   tuple(tuple(r) for r in data.get("direction",  # type: ignore[arg-type]
                                                                    ((1, 0, 0), (0, 1, 0), (0, 0, 1))))))
    annotations = []
    counts: Dict[str, int] = {}
    for item in data["annotations"]:
        label = template.match_roi_name(item["label"]) if template is not None else None
        code = label.code if label is not None else machine_code(item["label"])
        category = label.category if label is not None else "other"
        counts[code] = counts.get(code, 0) + 1
        payload = {k: item[k] for k in _GEOMETRY_KEYS if k in item}
        annotations.append(Annotation(f"{code}_{counts[code]:02d}", category, code, item["type"], payload))
    stamp = str(data.get("timestamp", ""))
    if stamp and parse_time(stamp) is None and parse_time(stamp + "Z") is not None:
        stamp += "Z"  # Appendix B times have no zone; read as UTC and said so in the audit trail
    stamp = stamp or now_utc()
    metadata = {"annotator": str(data.get("annotator", "unknown")),
                "software": {"name": "MultiModalAnnotation", "version": _version()},
                "timestamps": {"start": stamp, "end": stamp}, "version": str(data.get("version", "1.0")),
                "audit": [{"time": now_utc(), "actor": "mmanno", "action": "imported",
                           "detail": "converted from the Appendix B form (time zone assumed UTC)"}]}
    return AnnotationDocument(task_id="APPENDIX_B_IMPORT", template_id=template.id if template else "unknown",
                              template_version=template.version if template else "0", image=image,
                              annotations=tuple(annotations), metadata=metadata)


def _version() -> str:
    from . import __version__

    return __version__


def read_document(path: str, template: Optional[LabelTemplate] = None) -> AnnotationDocument:
    """Read an annotation document (Appendix C, its C.5 flat variant, or Appendix B)."""
    data = read_json(path)
    if _is_appendix_b(data):
        return from_appendix_b(data, Path(path).parent, template, file=path)
    if not isinstance(data, dict):
        raise DocumentError(["(root): an annotation document is a JSON object"], file=path)
    return document_from_dict(normalise_flat_annotations(data), file=path)


def write_document(path: str, document: AnnotationDocument) -> None:
    """Write the document atomically (validated first: nothing invalid is ever written)."""
    from RTSSBridgeLib.fileio import write_json_atomic

    data = document.to_dict()
    problems = document_problems(data)
    if problems:
        raise DocumentError(problems, file=path)
    write_json_atomic(path, data)


# --------------------------------------------------------------------------- checks
def document_problems_against_template(document: AnnotationDocument, template: LabelTemplate) -> List[str]:
    """Codes exist, category matches, type allowed, instances in range, attributes valid."""
    problems = []
    if (document.template_id, document.template_version) != (template.id, template.version):
        problems.append(f"template: the document uses {document.template_id} {document.template_version}, "
                        f"checked against {template.id} {template.version}")
    given: Dict[Tuple[str, Optional[int]], Dict[str, Any]] = {}
    for n, item in enumerate(document.annotations):
        at = f"annotations[{n}] ({item.id})"
        label = template.get(item.label_code)
        if label is None:
            problems.append(f"{at}.label_code: {item.label_code} is not a label of template {template.id}")
            continue
        if item.category != label.category:
            problems.append(f"{at}.category: {item.category} but {label.code} is {label.category}")
        if item.type not in label.annotation_types:
            problems.append(f"{at}.type: {label.code} does not allow {item.type} "
                            f"(allowed: {', '.join(label.annotation_types)})")
        if item.instance is not None:
            if label.instances is None:
                problems.append(f"{at}.instance: {label.code} has no numbered instances")
            elif item.instance > label.instances.count:
                problems.append(f"{at}.instance: {item.instance} is above {label.instances.count}, the largest "
                                f"instance of {label.code}")
        if "mask_value" in item.data:
            value = int(item.data["mask_value"])
            expected = template.resolve_value(value)
            if expected is None or expected[0].code != label.code or expected[1] != item.instance:
                problems.append(f"{at}.data.mask_value: {value} is not the value of {label.code}"
                                + (f" instance {item.instance}" if item.instance else ""))
        for key, value in item.attributes.items():
            definition = label.attribute(key)
            if definition is None:
                known = ", ".join(a.key for a in label.attributes) or "none"
                problems.append(f"{at}.data.attributes.{key}: {label.code} has no attribute {key} (known: {known})")
                continue
            reason = definition.check(value)
            if reason:
                problems.append(f"{at}.data.attributes.{key}: {reason}")
        given.setdefault((label.code, item.instance), {}).update(item.attributes)
    for (code, instance), attributes in given.items():
        label = template.label(code)
        for definition in label.attributes:
            if definition.required and definition.key not in attributes:
                problems.append(f"annotations ({code}{'' if instance is None else ' instance ' + str(instance)}): "
                                f"required attribute {definition.key} is missing")
    return problems


def document_problems_against_geometry(document: AnnotationDocument, base_dir: Optional[Path] = None) -> List[str]:
    """Boxes, polygons and points inside the image; mask files safe, readable and on its grid."""
    g = document.image.geometry
    problems = []

    def inside(at: str, ijk: Sequence[Sequence[float]]) -> None:
        arr = np.asarray(ijk, dtype=float)
        bad = ~g.contains_ijk(arr)
        if np.any(bad):
            first = arr[int(np.argmax(bad))].tolist()
            problems.append(f"{at}: {int(bad.sum())} position(s) outside the image (first {first}, image "
                            f"{list(g.shape)} voxels, valid -0.5..n-0.5)")

    def slice_ok(at: str, k: int) -> bool:
        if not 0 <= k < g.shape[2]:
            problems.append(f"{at}.data.slice_index: {k} is outside 0..{g.shape[2] - 1}")
            return False
        return True

    for n, item in enumerate(document.annotations):
        at = f"annotations[{n}] ({item.id})"
        data = item.data
        if item.type == "point":
            inside(f"{at}.data.point", [data["point"]])
        elif item.type == "bbox":
            box = list(data["bbox"])
            if len(box) == 4:
                if slice_ok(at, int(data["slice_index"])):
                    k = float(data["slice_index"])
                    inside(f"{at}.data.bbox", [[box[0], box[1], k], [box[2], box[3], k]])
            else:
                inside(f"{at}.data.bbox", [box[:3], box[3:]])
        elif item.type == "polygon":
            if slice_ok(at, int(data["slice_index"])):
                k = float(data["slice_index"])
                inside(f"{at}.data.polygon", [[x, y, k] for x, y in data["polygon"]])
        elif item.type == "mask" and base_dir is not None:
            problems += _mask_problems(at, item, g, base_dir)
    return problems


def _mask_problems(at: str, item: Annotation, grid: ImageGeometry, base_dir: Path) -> List[str]:
    from RTSSBridgeLib.nifti import read_nifti

    relative = str(item.data["mask_file"])
    try:
        path = resolve_inside(base_dir, relative)
    except InputError as exc:
        return [f"{at}.data.mask_file: {exc.rule}"]
    if not path.is_file():
        return [f"{at}.data.mask_file: {relative} does not exist"]
    try:
        image = read_nifti(path)
    except InputError as exc:
        return [f"{at}.data.mask_file: {exc.rule}"]
    if image.geometry.shape != grid.shape:
        return [f"{at}.data.mask_file: {relative} has shape {list(image.geometry.shape)}, the image "
                f"{list(grid.shape)}; rule: a mask is on the image's grid"]
    distance = image.geometry.max_corner_distance_mm(grid)
    if distance > MASK_GRID_TOLERANCE_MM:
        return [f"{at}.data.mask_file: {relative} is {distance:.3g} mm away from the image grid "
                f"(> {MASK_GRID_TOLERANCE_MM:g} mm); rule: a mask is on the image's grid"]
    value = item.data.get("mask_value")
    present = np.any(image.voxels == value) if value is not None else np.any(image.voxels != 0)
    if not present:
        return [f"{at}.data.mask_file: {relative} has no voxel "
                + (f"of value {value}" if value is not None else "set") + "; rule: a mask annotation is not empty"]
    return []


def validate_document(document: AnnotationDocument, template: Optional[LabelTemplate] = None,
                      base_dir: Optional[Path] = None) -> List[str]:
    """Every problem of a document: schema, template and geometry (one line each)."""
    problems = document_problems(document.to_dict())
    if template is not None:
        problems += document_problems_against_template(document, template)
    problems += document_problems_against_geometry(document, base_dir)
    return problems


def relative_posix(path: Path, root: Path) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")
