"""The fusion record of an annotation document and its check (R-8.4.1.2, R-8.4.1.6).

:func:`reference_entry` / :func:`moving_entry` / :func:`fusion_section` build the ``fusion`` object
of the annotation schema: the reference frame (series, Frame of Reference UID, grid), each moving
series with its transform file (relative path + SHA-256), direction, matrices (LPS and RAS),
algorithm, versions and parameters, the errors measured and the guard decision, and the
cross-modality consistency results.

:func:`check_fusion` re-checks a record against the files next to it: each transform file exists,
has the recorded SHA-256, loads in SimpleITK and holds the recorded matrix; every error is within
the threshold; no structure is flagged. :func:`check_package` does that for an export package
(``mmanno fusion check PACKAGE``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.fileio import sha256_file

from ..documents import resolve_inside
from .accuracy import AlignmentCheck, Residual, TargetRegistrationError
from .consistency import ConsistencyResult
from .guard import FusionGuard, GuardDecision, RegistrationState
from .images import FusionImage
from .registration import RegistrationResult, matrix_json, read_transform, transform_matrix_lps

PathLike = Union[str, "os.PathLike[str]"]
#: Largest difference between the matrix in a transform file and the recorded one (float64 text/HDF5).
MATRIX_TOLERANCE = 1e-6


def reference_entry(series_key: str, image: FusionImage) -> Dict[str, Any]:
    data: Dict[str, Any] = {"series_key": series_key, "modality": image.modality or "OT",
                            "geometry": image.geometry.to_dict()}
    if image.series_instance_uid:
        data["series_instance_uid"] = image.series_instance_uid
    if image.frame_of_reference_uid:
        data["frame_of_reference_uid"] = image.frame_of_reference_uid
    return data


def moving_entry(series_key: str, modality: str, result: RegistrationResult, transform_path: PathLike,
                 base_dir: PathLike, *, tre: Optional[TargetRegistrationError] = None,
                 residual: Optional[Residual] = None, alignment: Optional[AlignmentCheck] = None,
                 decision: Optional[GuardDecision] = None, series_instance_uid: str = "") -> Dict[str, Any]:
    """The record of one moving series; ``transform_path`` is written relative to ``base_dir``."""
    path = Path(transform_path)
    relative = _relative_to(path, base_dir)
    d = result.to_dict()
    errors: Dict[str, Any] = {}
    if tre is not None:
        errors.update({"tre_mean_mm": tre.mean_mm, "tre_max_mm": tre.max_mm, "n_landmarks": len(tre.names)})
    if residual is not None:
        errors.update({"residual_translation_mm": residual.translation_mm,
                       "residual_rotation_deg": residual.rotation_deg})
    if alignment is not None:
        errors["alignment"] = {"passed": alignment.passed, "residual_translation_mm": alignment.translation_mm,
                               "residual_rotation_deg": alignment.rotation_deg, "reason": alignment.reason()}
    entry: Dict[str, Any] = {
        "series_key": series_key, "modality": modality or "OT", "transform_file": relative,
        "transform_sha256": sha256_file(path), "direction": "fixed_to_moving", "mode": result.mode,
        "deformable": result.deformable, "matrix_lps": d["matrix_lps"], "matrix_ras": d["matrix_ras"],
        "algorithm": {"name": "SimpleITK ImageRegistrationMethod", "metric": d["metric"], "versions": d["versions"],
                      "parameters": d["parameters"], "metric_before": d["metric_before"],
                      "metric_after": d["metric_after"]},
        "errors": errors,
    }
    if series_instance_uid:
        entry["series_instance_uid"] = series_instance_uid
    if decision is not None:
        entry["guard"] = {"allowed": decision.allowed, "state": decision.state, "reason": decision.reason[:500]}
    return entry


def image_reference_entry(series_key: str, image: Any) -> Dict[str, Any]:
    """The reference entry from a document's :class:`~MultiModalAnnotationLib.documents.ImageRef`."""
    data: Dict[str, Any] = {"series_key": series_key, "modality": image.modality, "geometry": image.geometry.to_dict()}
    if image.uid and all(part.isdigit() for part in image.uid.split(".")):
        data["series_instance_uid"] = image.uid
    if image.frame_of_reference_uid:
        data["frame_of_reference_uid"] = image.frame_of_reference_uid
    return data


def entry_from_result_json(series_key: str, modality: str, data: Mapping[str, Any], transform_path: PathLike,
                           base_dir: PathLike, threshold_mm: float, reference: str) -> Dict[str, Any]:
    """The moving entry from ``mmanno register`` JSON (``registration-result`` schema) and its
    transform file (written relative to ``base_dir``); the guard decision from its errors."""
    path = Path(transform_path)
    relative = _relative_to(path, base_dir)
    digest = sha256_file(path)
    if digest != data["transform_sha256"]:
        raise InputError("SHA-256 differs from the registration result's transform_sha256; rule: the transform "
                         "file is the one the registration wrote", file=str(path), field="transform_sha256")
    errors: Dict[str, Any] = {}
    if "tre_mm" in data:
        errors.update({"tre_mean_mm": data["tre_mm"]["mean_mm"], "tre_max_mm": data["tre_mm"]["max_mm"],
                       "n_landmarks": data["tre_mm"]["n"]})
    for key in ("residual_translation_mm", "residual_rotation_deg"):
        if key in data:
            errors[key] = data[key]
    entry: Dict[str, Any] = {
        "series_key": series_key, "modality": modality, "transform_file": relative, "transform_sha256": digest,
        "direction": "fixed_to_moving", "mode": data["mode"], "deformable": bool(data.get("deformable", False)),
        "matrix_lps": data["matrix_lps"], "matrix_ras": data["matrix_ras"],
        "algorithm": {"name": "SimpleITK ImageRegistrationMethod", "metric": data.get("metric", ""),
                      "versions": data["versions"], "parameters": data["parameters"],
                      "metric_before": data["metric_before"], "metric_after": data["metric_after"]},
        "errors": errors,
    }
    moving_uid = data.get("moving", {}).get("series_instance_uid")
    if moving_uid:
        entry["series_instance_uid"] = moving_uid
    guard = FusionGuard(reference=reference, threshold_mm=threshold_mm)
    guard.record(state_of(entry))
    decision = guard.decide(series_key)
    entry["guard"] = {"allowed": decision.allowed, "state": decision.state, "reason": decision.reason[:500]}
    return entry


def with_moving(fusion: Optional[Mapping[str, Any]], reference: Mapping[str, Any], entry: Mapping[str, Any],
                threshold_mm: float) -> Dict[str, Any]:
    """``fusion`` (or a new record) with ``entry`` added or replacing the one of the same series."""
    import copy

    record: Dict[str, Any] = (copy.deepcopy(dict(fusion)) if fusion is not None
                              else {"reference": dict(reference), "moving": []})
    record["threshold_mm"] = float(threshold_mm)
    record["moving"] = [m for m in record["moving"] if m["series_key"] != entry["series_key"]] + [dict(entry)]
    return record


def fusion_section(reference: Mapping[str, Any], moving: Sequence[Mapping[str, Any]], threshold_mm: float,
                   consistency: Sequence[ConsistencyResult] = (), preview_file: str = "") -> Dict[str, Any]:
    data: Dict[str, Any] = {"reference": dict(reference), "threshold_mm": float(threshold_mm),
                            "moving": [dict(m) for m in moving]}
    if consistency:
        data["consistency"] = [c.to_dict() for c in consistency]
    if preview_file:
        data["preview_file"] = preview_file
    return data


def state_of(entry: Mapping[str, Any]) -> RegistrationState:
    """Guard state from a recorded moving entry."""
    e = entry.get("errors", {})
    alignment = e.get("alignment")
    return RegistrationState(
        series_key=str(entry["series_key"]), transform_file=str(entry["transform_file"]),
        tre_mean_mm=e.get("tre_mean_mm"), tre_max_mm=e.get("tre_max_mm"),
        residual_translation_mm=e.get("residual_translation_mm"), residual_rotation_deg=e.get("residual_rotation_deg"),
        alignment_passed=None if alignment is None else bool(alignment["passed"]),
        alignment_reason="" if alignment is None else str(alignment.get("reason", "")))


@dataclass
class FusionCheck:
    """What :func:`check_fusion` found; ``passed`` when nothing blocks."""

    problems: List[str] = field(default_factory=list)
    flagged: List[str] = field(default_factory=list)
    decisions: List[GuardDecision] = field(default_factory=list)
    transforms: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and not self.flagged and all(d.allowed for d in self.decisions)

    def to_dict(self) -> Dict[str, Any]:
        return {"passed": self.passed, "problems": list(self.problems), "flagged": list(self.flagged),
                "guard": [d.to_dict() for d in self.decisions], "transforms": list(self.transforms)}


def check_fusion(fusion: Optional[Mapping[str, Any]], base_dir: PathLike,
                 threshold_mm: Optional[float] = None) -> FusionCheck:
    """Check a fusion record against the files in ``base_dir`` (see the module docstring)."""
    report = FusionCheck()
    if fusion is None:
        report.problems.append("fusion: the document has no fusion record; rule: a multi-modal case is registered "
                               "and the registration saved with the annotation (R-8.4.1.2)")
        return report
    root = Path(base_dir)
    threshold = float(threshold_mm if threshold_mm is not None else fusion["threshold_mm"])
    guard = FusionGuard(reference=str(fusion["reference"]["series_key"]), threshold_mm=threshold)
    for n, entry in enumerate(fusion["moving"]):
        at = f"fusion.moving[{n}]"
        info: Dict[str, Any] = {"series_key": entry["series_key"], "transform_file": entry["transform_file"]}
        report.transforms.append(info)
        try:
            path = resolve_inside(root, str(entry["transform_file"]))
        except InputError as exc:
            report.problems.append(f"{at}.transform_file: {exc.rule}")
            continue
        if not path.is_file():
            report.problems.append(f"{at}.transform_file: {entry['transform_file']} not found")
            continue
        digest = sha256_file(path)
        info["sha256_ok"] = digest == entry["transform_sha256"]
        if not info["sha256_ok"]:
            report.problems.append(f"{at}.transform_sha256: the file's SHA-256 {digest[:12]}... is not the recorded "
                                   f"{str(entry['transform_sha256'])[:12]}...")
        try:
            transform = read_transform(path)
        except InputError as exc:
            report.problems.append(f"{at}.transform_file: {exc.rule}")
            continue
        difference = float(np.max(np.abs(transform_matrix_lps(transform) - np.asarray(entry["matrix_lps"]))))
        info["matrix_difference"] = difference
        if difference > MATRIX_TOLERANCE:
            report.problems.append(f"{at}.matrix_lps: differs from the transform file by {difference:.3g}; rule: the "
                                   "record holds the file's matrix")
        guard.record(state_of(entry))
        guard.moving.append(str(entry["series_key"]))
    report.decisions = [d for d in guard.states() if d.state != "reference"]
    for item in fusion.get("consistency", []):
        flagged = item["centroid_distance_mm"] > threshold or item["hd95_mm"] > threshold
        if flagged:
            report.flagged.append(f"{item['structure']} ({item['reference_series']} vs {item['other_series']}): "
                                  f"centroid {item['centroid_distance_mm']:.2f} mm, HD95 {item['hd95_mm']:.2f} mm > "
                                  f"{threshold:g} mm; readjust (R-8.4.1.5)")
    return report


def check_package(path: PathLike) -> FusionCheck:
    """Read an export package (verified against its manifest) and check its fusion record; the
    threshold is the package task's fusion deviation when it has a task; the annotations must be
    on the fusion reference's grid."""
    from ..package import read_package

    package = read_package(path)
    threshold = package.task.qc.fusion_deviation_mm if package.task is not None else None
    report = _check_package_files(package, Path(path), threshold)
    fusion = package.document.fusion
    if fusion is not None:  # annotation happens on the registered (reference) grid only (8.4.1.4)
        from RTSSBridgeLib.geometry import ImageGeometry

        reference = ImageGeometry.from_dict(fusion["reference"]["geometry"])
        distance = reference.max_corner_distance_mm(package.document.image.geometry)
        if distance > 1e-3:
            report.problems.append(f"image: the annotations are on a grid {distance:.3g} mm from the fusion reference "
                                   f"{fusion['reference']['series_key']}; rule: annotate on the reference frame "
                                   "(registered images) only (R-8.4.1.4)")
    return report


def _check_package_files(package: Any, target: Path, threshold: Optional[float]) -> FusionCheck:
    import shutil
    import tempfile
    import zipfile

    if target.is_file():  # a zip: the transform files are checked from an extracted copy
        extracted = Path(tempfile.mkdtemp(prefix=".mmanno-fusion-"))
        try:
            with zipfile.ZipFile(target) as archive:
                for info in archive.infolist():
                    if info.filename.startswith("fusion/") and not info.is_dir():
                        destination = resolve_inside(extracted, info.filename)
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        destination.write_bytes(archive.read(info))
            return check_fusion(package.document.fusion, extracted, threshold)
        finally:
            shutil.rmtree(extracted, ignore_errors=True)
    return check_fusion(package.document.fusion, target, threshold)


__all__ = ["FusionCheck", "check_fusion", "check_package", "fusion_section", "matrix_json", "moving_entry",
           "reference_entry", "state_of"]


def _relative_to(path: Path, base_dir: PathLike) -> str:
    """``path`` relative to ``base_dir`` (POSIX form); a transform file outside it is refused."""
    try:
        return path.resolve().relative_to(Path(base_dir).resolve()).as_posix()
    except ValueError as exc:
        raise InputError(f"the transform file is outside {base_dir}; rule: it is saved with the annotation",
                         file=str(path), field="transform_file") from exc
