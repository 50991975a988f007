"""``mmanno check``: screen, quarantine, find cases, apply a profile's rules, report (R-6.3, R-7.2).

Order of work, so that nothing suspicious is ever parsed by a DICOM reader:

1. list every file below the checked folder and screen it from its first bytes
   (:mod:`.screening`); rejected files are copied to the quarantine folder (with a manifest of
   codes and SHA-256 digests) and take no further part;
2. read the headers of the screened DICOM files (:func:`~RTSSBridgeLib.dicom_series.scan_dicom`
   with only those paths); files the header pass finds truncated or unreadable are quarantined
   too;
3. group series into cases (a folder with ``case.json``; seed 001's class/patient/series/images
   folders; otherwise one case per patient), run every rule of the profile, and give each case
   and the batch a verdict: ``rejected`` when a blocking rule fails, ``admitted with warnings``,
   or ``admitted``.

The report (schema ``admission-report``) names every finding's code, severity, case, series,
files and rule. Paths are relative to the checked folder; patient names and identifiers never
appear.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pydicom

from .. import __version__
from ..dicom_series import iter_files, scan_dicom
from ..errors import InputError
from ..fileio import atomic_directory, sha256_file, write_json_atomic
from ..jsonschemas import schema_id, validate_document
from ..problems import ProblemCode
from .model import AdmissionProfile, Case, Finding, SeriesView, load_admission_profile
from .rules import RULES, CheckContext
from .screening import Screening, screen_file

REPORT_SCHEMA = "admission-report"
_QUARANTINE_CODES = {ProblemCode.TRUNCATED, ProblemCode.UNREADABLE, ProblemCode.NOT_DICOM}
_IDENTITY_TAGS = ["PatientID", "PatientName", "PatientBirthDate", "PatientSex", "RescaleIntercept", "RescaleSlope",
                  "StudyInstanceUID"]


def _hash(value: Any) -> str:
    return hashlib.sha256(str(value if value is not None else "").strip().encode("utf-8")).hexdigest()[:16]


def _series_label(view_series: Any) -> str:
    s = view_series
    number = f" #{s.series_number}" if s.series_number is not None else ""
    part = f" part {s.part}/{s.n_parts}" if s.n_parts > 1 else ""
    description = f" {s.series_description}" if s.series_description else ""
    return f"{s.modality or '?'}{number}{description}{part}"


def _view(series: Any) -> SeriesView:
    ds: pydicom.Dataset
    try:
        ds = pydicom.dcmread(series.files[0], stop_before_pixels=True, force=True, specific_tags=_IDENTITY_TAGS)
    except Exception:  # the scan read it a moment ago; a race leaves the identity unknown
        ds = pydicom.Dataset()
    patient_id = str(ds.get("PatientID", "") or "").strip()
    name = str(ds.get("PatientName", "") or "")
    birth = str(ds.get("PatientBirthDate", "") or "")
    hashes = {"PatientID": _hash(patient_id), "PatientName": _hash(name), "PatientBirthDate": _hash(birth),
              "PatientSex": _hash(ds.get("PatientSex", ""))}
    key = _hash(patient_id) if patient_id else _hash(f"name:{name}|{birth}")
    rescale = "RescaleIntercept" in ds and "RescaleSlope" in ds
    if not rescale and series.frames and (series.frames[0].slope != 1.0 or series.frames[0].intercept != 0.0):
        rescale = True  # rescale carried by functional groups (enhanced multi-frame)
    return SeriesView(series=series, label=_series_label(series), patient_key=key, identity_hashes=hashes,
                      rescale_present=rescale, patient_id=patient_id)


def _relative(root: str, path: str) -> str:
    rel = os.path.relpath(path, root)
    return "." if rel == os.curdir else rel


def find_cases(root: str, profile: AdmissionProfile, views: List[SeriesView], other_objects: List[str],
               data_files: List[str]) -> List[Case]:
    """Group series into cases (see the module docstring); labels are folders relative to ``root``."""
    root = os.path.abspath(root)
    base = root if os.path.isdir(root) else os.path.dirname(root)
    cases: Dict[str, Case] = {}

    def case_for(folder: str) -> Case:
        label = _relative(base, folder)
        if label not in cases:
            cases[label] = Case(label=label, folder=folder)
        return cases[label]

    levels = 4
    files = [f for v in views for f in v.files] + other_objects
    if profile.layout == "class/patient/series/images" and files and all(
            len(os.path.relpath(os.path.abspath(f), base).split(os.sep)) == levels for f in files):
        def folder_of(path: str) -> str:
            parts = os.path.relpath(os.path.abspath(path), base).split(os.sep)
            return os.path.join(base, parts[0], parts[1])
        for v in views:
            case_for(folder_of(v.files[0])).series.append(v)
        for f in other_objects:
            case_for(folder_of(f)).other_objects.append(f)
    else:
        markers = sorted({os.path.dirname(os.path.abspath(f)) for f in data_files
                          if os.path.basename(f) == "case.json"}, key=len, reverse=True)

        def marker_of(path: str) -> Optional[str]:
            target = os.path.abspath(path)
            return next((m for m in markers if target.startswith(m + os.sep)), None)

        by_patient: Dict[str, List[SeriesView]] = {}
        for v in views:
            marker = marker_of(v.files[0])
            if marker is not None:
                case_for(marker).series.append(v)
            else:
                by_patient.setdefault(v.patient_key, []).append(v)
        for n, (_, group) in enumerate(sorted(by_patient.items(), key=lambda kv: kv[1][0].files[0]), 1):
            folder = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for v in group for f in v.files])
            case = case_for(folder)
            if case.series and case.series[0].patient_key != group[0].patient_key:
                label = f"{_relative(base, folder)} (patient {n})"
                case = cases.setdefault(label, Case(label=label, folder=folder))
            case.series.extend(group)
        for f in other_objects:
            marker = marker_of(f)
            if marker is not None:
                case_for(marker).other_objects.append(f)
            elif cases:
                best = max(cases.values(), key=lambda c: len(os.path.commonpath(
                    [os.path.abspath(c.folder), os.path.abspath(f)])))
                best.other_objects.append(f)
    for f in data_files:
        target = os.path.abspath(f)
        owner = max((c for c in cases.values() if target.startswith(os.path.abspath(c.folder) + os.sep)),
                    key=lambda c: len(c.folder), default=None)
        if owner is not None:
            owner.data_files.append(f)
    for case in cases.values():
        for v in case.series:
            v.case = case.label
    return [cases[k] for k in sorted(cases)]


def quarantine_files(root: str, rejected: List[Tuple[str, str, str]], folder: str) -> Dict[str, Any]:
    """Copy rejected files below ``folder`` (keeping their relative paths) with ``quarantine.json``.

    ``rejected`` holds (path, code, detail). The folder is written atomically and must not exist
    or be empty. Files are copied, never moved: inputs are not modified.
    """
    base = root if os.path.isdir(root) else os.path.dirname(root)
    entries = []
    with atomic_directory(folder) as tmp:
        for path, code, detail in rejected:
            rel = _relative(base, path)
            target = os.path.join(str(tmp), "files", rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)
            os.chmod(target, 0o400)  # never executable, read-only
            entries.append({"file": rel, "code": code, "detail": detail, "size": os.path.getsize(path),
                            "sha256": sha256_file(path), "copied_to": os.path.join("files", rel)})
        write_json_atomic(os.path.join(str(tmp), "quarantine.json"),
                          {"checked_folder": os.path.abspath(root), "files": entries})
    return {"folder": os.path.abspath(folder), "files": entries}


def run_check(
    path: str,
    profile: str = "generic",
    *,
    quarantine: Optional[str] = None,
    declared_thickness_mm: Optional[float] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Dict[str, Any]:
    """Check ``path`` (a folder, searched recursively, or one file) against an admission profile.

    ``quarantine`` is the new folder that receives copies of rejected files (None: they are only
    listed). Returns the report (schema ``admission-report``); raises :class:`InputError` when
    ``path`` does not exist or the profile is invalid.
    """
    started = time.monotonic()
    prof = load_admission_profile(profile)
    if not os.path.exists(path):
        raise InputError("no such file or folder", file=path, field="PATH")
    if declared_thickness_mm is not None and not declared_thickness_mm > 0:
        raise InputError(f"must be a positive thickness in mm, got {declared_thickness_mm}",
                         field="--declare-thickness")
    root = os.path.abspath(path)
    files = iter_files(root)
    screenings: List[Screening] = []
    for n, f in enumerate(files, 1):
        screenings.append(screen_file(f, prof.allowed_data, prof.max_file_mb))
        if progress is not None:
            progress(n, 2 * len(files))
    dicom_files = [s.path for s in screenings if s.kind == "dicom"]
    data_files = [s.path for s in screenings if s.kind == "data"]
    scan = scan_dicom(root, paths=dicom_files,
                      progress=(lambda d, t: progress(len(files) + d, len(files) + t)) if progress else None)
    rejected = [(s.path, s.code.value if s.code else "REJECTED", s.detail) for s in screenings if s.rejected]
    rejected += [(p.files[0], p.code.value, p.message) for p in scan.problems if p.code in _QUARANTINE_CODES
                 and p.files]
    other_objects = [p.files[0] for p in scan.problems if p.code == ProblemCode.NON_IMAGE_OBJECT and p.files]
    views = [_view(s) for s in scan.series]
    cases = find_cases(root, prof, views, other_objects, data_files)
    base = root if os.path.isdir(root) else os.path.dirname(root)
    ctx = CheckContext(root=base, profile=prof, scan=scan, screenings=screenings, cases=cases, data_files=data_files,
                       declared_thickness_mm=declared_thickness_mm)
    findings: List[Finding] = []
    for spec in prof.rules:
        findings.extend(RULES[spec.rule](ctx, spec))
    quarantine_info: Dict[str, Any] = {"folder": None, "files": []}
    if rejected:
        if quarantine is not None:
            quarantine_info = quarantine_files(root, rejected, quarantine)
        else:
            quarantine_info = {"folder": None, "files": [
                {"file": _relative(base, p), "code": c, "detail": d, "size": os.path.getsize(p),
                 "sha256": sha256_file(p), "copied_to": None} for p, c, d in rejected]}
    report = build_report(ctx, findings, quarantine_info, time.monotonic() - started)
    validate_document(report, REPORT_SCHEMA)
    return report


def _verdict(findings: List[Finding]) -> str:
    if any(f.blocking for f in findings):
        return "rejected"
    if any(f.severity in ("error", "warning") for f in findings):
        return "admitted with warnings"
    return "admitted"


def build_report(ctx: CheckContext, findings: List[Finding], quarantine: Dict[str, Any],
                 duration_s: float) -> Dict[str, Any]:
    """The JSON report: batch verdict, per-case verdicts with their series and findings."""
    root = ctx.root
    cases_out = []
    for case in ctx.cases:
        own = [f for f in findings if f.case == case.label]
        series_out = []
        for v in case.series:
            s = v.series
            mine = [f for f in own if f.series == s.series_uid and f.series_label == v.label]
            thickness = [f.slice_thickness for f in s.frames if f.slice_thickness is not None]
            series_out.append({
                "label": v.label, "series_uid": s.series_uid, "modality": s.modality,
                "shape": list(s.geometry.shape), "spacing_mm": [round(float(x), 6) for x in s.geometry.spacing_mm],
                "slice_thickness_mm": round(float(sorted(thickness)[len(thickness) // 2]), 6) if thickness else None,
                "n_files": s.n_files, "transfer_syntaxes": s.transfer_syntaxes,
                "verdict": _verdict(mine),
            })
        cases_out.append({
            "case": case.label, "verdict": _verdict(own), "modalities": case.modalities,
            "n_series": len(case.series), "n_files": sum(v.series.n_files for v in case.series),
            "other_objects": [_relative(root, f) for f in case.other_objects],
            "data_files": [_relative(root, f) for f in case.data_files],
            "series": series_out,
            "findings": [f.to_dict(root) for f in own],
        })
    batch = [f for f in findings if not f.case or f.case not in {c.label for c in ctx.cases}]
    n_blocking = sum(1 for f in findings if f.blocking)
    counts: Dict[str, int] = {}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    prof = ctx.profile
    return {
        "schema": schema_id(REPORT_SCHEMA),
        "software": {"name": "mmanno", "version": __version__},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "checked_path": root,
        "profile": {"name": prof.name, "version": prof.version, "title": prof.title, "source": prof.source,
                    "rules": [{"rule": r.rule, "clause": r.clause, "title": r.title, "blocking": r.blocking}
                              for r in prof.rules]},
        "declared_thickness_mm": ctx.declared_thickness_mm,
        "verdict": _verdict(findings),
        "n_cases": len(ctx.cases),
        "n_cases_admitted": sum(1 for c in cases_out if c["verdict"] != "rejected"),
        "n_files": len(ctx.screenings),
        "n_dicom_files": ctx.scan.n_files,
        "n_blocking": n_blocking,
        "findings_by_severity": counts,
        "cases": cases_out,
        "batch_findings": [f.to_dict(root) for f in batch],
        "quarantine": quarantine,
        "duration_s": round(duration_s, 3),
    }
