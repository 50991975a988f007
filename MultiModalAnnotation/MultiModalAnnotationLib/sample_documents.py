"""Annotation documents made from a sample case's ground truth with the matching built-in template.

This is what ``mmanno demo`` packages and what the tests use as realistic documents: the label
maps become mask annotations (lesion ``n`` = instance ``n`` of the numbered label, value 10 + n),
the ground-truth tables become attributes (seed 001 nodule class, pathology, TNM; seed 002 ROI
names; ACR TI-RADS features; seed 004 erosion and JSN scores), and nodule centres, the thyroid
nodule's box and the RA joints become points and boxes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.nifti import read_nifti

from . import __version__
from .documents import Annotation, AnnotationDocument, ImageRef, now_utc
from .templates import LabelTemplate, builtin_template

#: Sample kind -> (built-in template id, series key of the annotated image).
SAMPLE_TEMPLATES: Dict[str, Tuple[str, str]] = {
    "ct-chest": ("lung-ct", "CT"),
    "mr-brain-mets": ("brain-mets-mr", "T1W_C"),
    "us-thyroid": ("thyroid-us-tirads", "US"),
    "xray-ra": ("ra-hand-foot-mtss", "CR_HAND"),
}


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _image(manifest: Dict[str, Any], key: str) -> ImageRef:
    series = next(s for s in manifest["series"] if s["key"] == key)
    return ImageRef(series["series_instance_uid"], series["modality"], ImageGeometry.from_dict(series["geometry"]),
                    series.get("frame_of_reference_uid") or "", key)


def _metadata(kind: str) -> Dict[str, Any]:
    stamp = now_utc()
    return {"annotator": "SAMPLE_GROUND_TRUTH", "institution": "MultiModalAnnotation sample generator",
            "software": {"name": "MultiModalAnnotation", "version": __version__},
            "timestamps": {"start": stamp, "end": stamp}, "qc": {"status": "pending", "issues": []},
            "version": "v1.0",
            "audit": [{"time": stamp, "actor": "mmanno", "action": "imported",
                       "detail": f"built from the ground truth of the {kind} sample"}]}


def _labelmap_annotations(template: LabelTemplate, labels: np.ndarray, extra: Dict[int, Dict[str, Any]]
                          ) -> Tuple[List[Annotation], Dict[str, np.ndarray]]:
    annotations: List[Annotation] = []
    masks: Dict[str, np.ndarray] = {}
    for value in sorted(int(v) for v in np.unique(labels) if v != 0):
        resolved = template.resolve_value(value)
        if resolved is None:
            raise InputError(f"labelmap value {value} is not a label of template {template.id}", field="labels")
        label, instance = resolved
        ident = f"{label.code}_{instance:02d}" if instance else f"ORG_{label.code}"
        attributes = extra.get(value, {})
        data: Dict[str, Any] = {"mask_file": f"masks/{ident}.nii.gz"}
        if attributes:
            data["attributes"] = attributes
        annotations.append(Annotation(ident, label.category, label.code, "mask", data, instance))
        masks[ident] = labels == value
    return annotations, masks


def document_from_sample(root: Path, template: Optional[LabelTemplate] = None
                         ) -> Tuple[AnnotationDocument, Dict[str, np.ndarray], LabelTemplate]:
    """(document, masks by annotation id, template) for the sample case in ``root``."""
    manifest = _json(root / "case.json")
    kind = manifest["kind"]
    if kind not in SAMPLE_TEMPLATES:
        raise InputError(f"no built-in template for sample kind {kind}", field="kind")
    template_id, key = SAMPLE_TEMPLATES[kind]
    template = template or builtin_template(template_id)
    image = _image(manifest, key)
    gt = root / "ground_truth"
    annotations: List[Annotation] = []
    masks: Dict[str, np.ndarray] = {}
    if kind == "ct-chest":
        labels = read_nifti(gt / "ct_labels.nii.gz").voxels
        extra: Dict[int, Dict[str, Any]] = {}
        points = []
        for nodule in _json(gt / "nodules.json")["nodules"]:
            attributes: Dict[str, Any] = {"malignancy": nodule["classification"],
                                          "pathology_type": nodule["pathology_type"], "density": nodule["density"],
                                          "diameter_mm": nodule["diameter_mm"]}
            if nodule["tnm"]:
                attributes.update(tnm_t=nodule["tnm"]["T"], tnm_n=nodule["tnm"]["N"], tnm_m=nodule["tnm"]["M"],
                                  clinical_stage=nodule["clinical_stage"])
            extra[nodule["label_value"]] = attributes
            n = nodule["label_value"] - 10
            if not image.geometry.contains_ijk(nodule["centre_ijk"]):
                continue  # a thin (or oblique) sample can cut a nodule off from its centre
            points.append(Annotation(f"NODULE_{n:02d}_CENTRE", "lesion", "NODULE", "point",
                                     {"point": [float(v) for v in nodule["centre_ijk"]]}, n))
        annotations, masks = _labelmap_annotations(template, labels, extra)
        annotations += points
    elif kind == "mr-brain-mets":
        labels = read_nifti(gt / "mr_labels.nii.gz").voxels
        extra = {}
        for roi in _json(gt / "lesions.json")["rois"]:
            if roi["type"] == "metastasis":
                extra[roi["label_value"]] = {"roi_name": roi["roi_name"], "enhancement": roi["enhancement"],
                                             "volume_mm3": roi["volume_mm3"], "primary_tumour": "lung"}
        annotations, masks = _labelmap_annotations(template, labels, extra)
    elif kind == "us-thyroid":
        labels = read_nifti(gt / "us_nodule_mask.nii.gz").voxels
        nodule = _json(gt / "nodule.json")
        tirads = nodule["tirads"]
        attributes = {k: v["value"] for k, v in tirads["features"].items()}
        attributes.update(tirads_points=int(tirads["total_points"]), tirads_level=int(tirads["level"][2:]),
                          lobe=nodule["nodule"]["lobe"],
                          max_diameter_mm=max(nodule["nodule"]["width_mm"], nodule["nodule"]["height_mm"]))
        annotations, masks = _labelmap_annotations(template, labels, {1: attributes})
        box = nodule["nodule"]["bbox_px"]
        annotations.append(Annotation("THYROID_NODULE_BOX", "lesion", "THYROID_NODULE", "bbox",
                                      {"bbox": [float(box["x_min"]), float(box["y_min"]), float(box["x_max"]),
                                                float(box["y_max"])], "slice_index": 0,
                                       "cross_modal_links": [{"target": "REPORT_CONCLUSION", "kind": "text",
                                                              "relation": "diagnosis", "consistency": "unchecked"}]}))
        annotations.append(Annotation("CASE", "attribute", "CASE_LEVEL", "attribute",
                                      {"attributes": {"highest_tirads_level": int(tirads["level"][2:]),
                                                      "nodule_count": 1}}))
    else:  # xray-ra: the hand image with its joints
        joints = _json(gt / "joints.json")
        for joint in joints["joints"]:
            if joint["series_key"] != key:
                continue
            attributes = {}
            if joint["erosion"] is not None:
                attributes["erosion"] = joint["erosion"]
            if joint["jsn"] is not None:
                attributes["jsn"] = joint["jsn"]
            label = template.label(joint["code"])
            annotations.append(Annotation(f"JOINT_{joint['code']}", label.category, label.code, "point",
                                          {"point": [float(joint["x"]), float(joint["y"]), 0.0],
                                           "attributes": attributes}))
        flags = joints["abnormal_orientation"]
        annotations.append(Annotation("CASE", "attribute", "MTSS_CASE", "attribute",
                                      {"attributes": {"abnormal_orientation_hand": flags["hand"],
                                                      "abnormal_orientation_foot": flags["foot"]}}))
    task_id = f"TASK_SAMPLE_{kind.upper().replace('-', '_')}_{int(manifest['seed']):06d}"
    document = AnnotationDocument(task_id, template.id, template.version, image, tuple(annotations), _metadata(kind))
    return document, masks, template
