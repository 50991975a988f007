"""The RT Structure Set of a sample case: ground-truth masks written as a real RTSS (R-002, R-5.7).

A sample kind calls :func:`write_structure_set` in its ``finish`` step, after its images are
written. The structure set is its own series in ``dicom/RTSTRUCT``, references the planned
slices of one image series (every planned slice: with ``drop_slice`` the dropped image is still
referenced, as happens when an image goes missing after contouring, which the importer must then
clip and report), copies Patient and Study from a written image, and gets deterministic UIDs,
date and time, so the same case is the same bytes. The manifest gets a ``structure_sets`` entry
and a ``ground_truth`` entry of format ``rtstruct``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pydicom

from ..roi import RoiMask
from ..rtss_export import ExportOptions, export_rtss
from ..rtss_import import RTSTRUCT_SOP_CLASS_UID
from ..structures import ReferenceGrid, Roi
from .case import Context, VolumePlan
from .dicom_writer import SOP_CLASS_UIDS, file_name_for, instance_uid
from .identity import add_seconds

FOLDER = "RTSTRUCT"


@dataclass(frozen=True)
class RoiSpec:
    """One ROI of a sample structure set: the ground-truth label value it is made of."""

    number: int
    name: str
    label_value: int
    color: Tuple[int, int, int]
    interpreted_type: str
    code: Optional[str] = None  # the ground-truth label code (manifest only)


def write_structure_set(ctx: Context, volume: VolumePlan, rois: Sequence[RoiSpec], *, label: str,
                        name: str, description: str, series_number: int, minutes_after: float) -> Dict[str, Any]:
    """Write the structure set of ``rois`` (masks ``volume.labels == label_value``) referencing
    ``volume``'s series; returns its manifest entry."""
    assert volume.labels is not None
    geometry = volume.geometry
    series_uid = volume.series.series_instance_uid
    uids = [instance_uid(series_uid, k) for k in range(geometry.shape[2])]
    grid = ReferenceGrid.from_geometry(
        geometry, uids, sop_class_uid=SOP_CLASS_UIDS[volume.modality], series_instance_uid=series_uid,
        study_instance_uid=volume.study.study_instance_uid,
        frame_of_reference_uid=volume.series.frame_of_reference_uid or "", modality=volume.modality)
    image_folder = ctx.path(f"dicom/{volume.folder}")
    header = pydicom.dcmread(sorted(image_folder.glob("*.dcm"))[0], stop_before_pixels=True)
    items = [Roi(number=spec.number, name=spec.name, color=spec.color, interpreted_type=spec.interpreted_type,
                 generation_algorithm="MANUAL", mask=RoiMask.from_full(volume.labels == spec.label_value))
             for spec in rois]
    sop_uid = ctx.uid("rtstruct", "instance")
    options = ExportOptions(
        structure_set_label=label, structure_set_name=name, series_description=description,
        series_number=series_number, sop_instance_uid=sop_uid, series_instance_uid=ctx.uid("series", FOLDER),
        date=volume.study.date, time=add_seconds(volume.study.time, 60.0 * minutes_after)[:6],
        manufacturer="MMANNO Annotation Station", model_name="mmanno-samples")
    file_name = file_name_for(sop_uid)
    result = export_rtss(items, grid, ctx.path(f"dicom/{FOLDER}/{file_name}"), header=header, options=options)
    entries: List[Dict[str, Any]] = []
    for spec, roi in zip(rois, result.rois):
        entries.append({"roi_number": spec.number, "roi_name": spec.name, "label_value": spec.label_value,
                        "label_code": spec.code, "interpreted_type": spec.interpreted_type,
                        "color": list(spec.color), "n_voxels": roi.voxel_count(), "n_contours": roi.n_contours})
    return {
        "key": FOLDER,
        "dir": f"dicom/{FOLDER}",
        "file": file_name,
        "modality": "RTSTRUCT",
        "sop_class_uid": RTSTRUCT_SOP_CLASS_UID,
        "sop_instance_uid": sop_uid,
        "series_instance_uid": options.series_instance_uid,
        "study_instance_uid": volume.study.study_instance_uid,
        "frame_of_reference_uid": volume.series.frame_of_reference_uid,
        "referenced_series_key": volume.key,
        "referenced_series_instance_uid": series_uid,
        "structure_set_label": label,
        "description": description,
        "rois": entries,
    }


def ground_truth_entry(entry: Dict[str, Any], description: str) -> Dict[str, Any]:
    """The ``ground_truth`` item of a structure set entry."""
    return {"name": "structure_set", "path": f"{entry['dir']}/{entry['file']}", "format": "rtstruct",
            "series_key": entry["referenced_series_key"], "description": description}
