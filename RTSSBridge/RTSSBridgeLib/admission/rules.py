"""The admission rules (R-6.3, R-7.2, R-001): each takes the check's context and one configured rule.

Every rule is a function ``rule(ctx, spec) -> [Finding]`` registered in :data:`RULES` under the
name profiles use. Parameters come from the profile (``spec.params``); findings carry the rule,
so the report names the rule each one breaks.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..dicom_series import DicomScan, read_volume, transfer_syntax_name
from ..errors import InputError
from ..problems import ProblemCode
from .model import AdmissionProfile, Case, Finding, RuleSpec, SeriesView
from .screening import Screening

_PROJECTION = {"CR", "DX", "MG", "IO", "PX", "XA", "RF", "US", "ES", "XC", "GM", "SM", "OP", "OT"}
_VOLUME_MODALITIES = {"CT", "MR", "PT", "NM"}


@dataclass
class CheckContext:
    """Everything the rules look at."""

    root: str
    profile: AdmissionProfile
    scan: DicomScan
    screenings: List[Screening]
    cases: List[Case]
    data_files: List[str]
    declared_thickness_mm: Optional[float] = None
    unassigned_problems: List[Any] = field(default_factory=list)

    def case_of_file(self, path: str) -> str:
        best, length = "", -1
        for case in self.cases:
            folder = os.path.abspath(case.folder)
            target = os.path.abspath(path)
            if (target == folder or target.startswith(folder + os.sep)) and len(folder) > length:
                best, length = case.label, len(folder)
        return best


RuleFunction = Callable[[CheckContext, RuleSpec], List[Finding]]
RULES: Dict[str, RuleFunction] = {}


def rule(name: str) -> Callable[[RuleFunction], RuleFunction]:
    def register(fn: RuleFunction) -> RuleFunction:
        RULES[name] = fn
        return fn
    return register


def _series_findings(ctx: CheckContext, spec: RuleSpec) -> List[Tuple[Case, SeriesView]]:
    return [(c, s) for c in ctx.cases for s in c.series if spec.applies_to(s.modality)]


def _f(spec: RuleSpec, code: str, severity: str, message: str, case: str = "", view: Optional[SeriesView] = None,
       files: Sequence[str] = ()) -> Finding:
    return Finding(code=code, severity=severity, message=message, rule=spec, case=case,
                   series=view.series.series_uid if view is not None else "",
                   series_label=view.label if view is not None else "", files=tuple(files))


# ------------------------------------------------------------------------------------------ screening
_SCAN_QUARANTINE = {ProblemCode.TRUNCATED: "TRUNCATED", ProblemCode.UNREADABLE: "UNREADABLE",
                    ProblemCode.NOT_DICOM: "NOT_DICOM"}


@rule("screening")
def rule_screening(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-6.3.3: every rejected file (polyglot preamble, executable, script, archive, non-DICOM named
    like DICOM, empty, oversized, truncated or unreadable) is a finding; the check quarantines it."""
    out = []
    for s in ctx.screenings:
        if s.rejected and s.code is not None:
            out.append(_f(spec, s.code.value, spec.severity, f"{s.detail}; quarantined, never loaded",
                          ctx.case_of_file(s.path), files=(s.path,)))
    for p in ctx.scan.problems:
        code = _SCAN_QUARANTINE.get(p.code)
        if code is not None:
            out.append(_f(spec, code, spec.severity, f"{p.message}; quarantined, never loaded",
                          ctx.case_of_file(p.files[0]) if p.files else "", files=p.files))
    return out


# ------------------------------------------------------------------------------------------ modalities
@rule("required_modalities")
def rule_required_modalities(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-6.3: each case has the image series the task needs (all_of, any_of, min_image_series)."""
    out = []
    p = spec.params
    for case in ctx.cases:
        have = set(case.modalities)
        n = len(case.series)
        if n < int(p.get("min_image_series", 0)):
            out.append(_f(spec, "NO_IMAGE_SERIES", spec.severity,
                          f"{n} image series; at least {p['min_image_series']} needed", case.label))
        missing = [m for m in p.get("all_of", []) if m not in have]
        if missing:
            out.append(_f(spec, "MODALITY_MISSING", spec.severity,
                          f"no {', '.join(missing)} series (found: {', '.join(sorted(have)) or 'none'})", case.label))
        any_of = p.get("any_of", [])
        if any_of and not have & set(any_of):
            out.append(_f(spec, "MODALITY_MISSING", spec.severity,
                          f"none of {', '.join(any_of)} (found: {', '.join(sorted(have)) or 'none'})", case.label))
    return out


# ------------------------------------------------------------------------------------------ completeness
def _orientation_flip(a: Sequence[float], b: Sequence[float], tol: float = 1e-3) -> bool:
    """True when orientation ``b`` mirrors or rotates ``a`` by 180 deg (a row or column reversed)."""
    ra, ca, rb, cb = np.array(a[:3]), np.array(a[3:]), np.array(b[:3]), np.array(b[3:])
    same_r, same_c = np.allclose(ra, rb, atol=tol), np.allclose(ca, cb, atol=tol)
    flip_r, flip_c = np.allclose(ra, -rb, atol=tol), np.allclose(ca, -cb, atol=tol)
    return (flip_r or same_r) and (flip_c or same_c) and (flip_r or flip_c)


@rule("series_completeness")
def rule_series_completeness(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-7.2: slices sorted by position with none missing, duplicated, misordered or flipped.

    Reuses the loader's problem list (missing slices, duplicated positions, non-uniform spacing,
    series that mix sizes or orientations) and adds what it lacks: a slice whose orientation is
    the mirror of the rest (SLICE_FLIPPED) and Instance Numbers that do not follow the slice
    positions (MISORDERED_INSTANCES: a reader that trusts them stacks slices wrongly).
    """
    out = []
    for case, view in _series_findings(ctx, spec):
        s = view.series
        for p in s.problems:
            if p.code == ProblemCode.MISSING_SLICES:
                out.append(_f(spec, "MISSING_SLICES", "error", p.message, case.label, view, p.files))
            elif p.code == ProblemCode.DUPLICATE_POSITION:
                out.append(_f(spec, "DUPLICATE_SLICES", "error", p.message, case.label, view, p.files))
            elif p.code == ProblemCode.NONUNIFORM_SPACING:
                out.append(_f(spec, "NONUNIFORM_SPACING", "warning", p.message, case.label, view, p.files))
            elif p.code in (ProblemCode.INCONSISTENT_SIZE, ProblemCode.INCONSISTENT_PIXEL_SPACING,
                            ProblemCode.INCONSISTENT_FRAME_OF_REFERENCE):
                out.append(_f(spec, p.code.value, "error", p.message, case.label, view, p.files))
            elif p.code == ProblemCode.INCONSISTENT_ORIENTATION and s.part == 1:
                out.extend(_flip_findings(ctx, spec, case, view))
        if s.modality in _PROJECTION or len(s.frames) < 3 or any(f.position is None for f in s.frames):
            continue
        numbers = [f.instance_number for f in s.frames]
        if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
            diffs = np.diff(np.array(numbers, dtype=np.int64))
            if not (np.all(diffs > 0) or np.all(diffs < 0)):
                direction = 1 if np.sum(diffs > 0) >= np.sum(diffs < 0) else -1
                bad = sorted({s.frames[i + d].path for i in np.nonzero(diffs * direction < 0)[0] for d in (0, 1)})
                out.append(_f(spec, "MISORDERED_INSTANCES", "warning",
                              f"Instance Numbers do not follow the slice positions at {len(bad)} file(s): slices are "
                              "sorted by position here, but tools that trust Instance Number stack them wrongly",
                              case.label, view, bad))
    return out


def _flip_findings(ctx: CheckContext, spec: RuleSpec, case: Case, view: SeriesView) -> List[Finding]:
    """One finding per orientation part of a split series: SLICE_FLIPPED for mirrored minority parts."""
    parts = [v for c in ctx.cases for v in c.series if v.series.series_uid == view.series.series_uid]
    parts.sort(key=lambda v: -len(v.series.frames))
    main = parts[0]
    out = []
    for other in parts[1:]:
        a, b = main.series.frames[0].orientation, other.series.frames[0].orientation
        if a is not None and b is not None and _orientation_flip(a, b):
            out.append(_f(spec, "SLICE_FLIPPED", "error",
                          f"{len(other.series.frames)} slice(s) have an Image Orientation (Patient) that mirrors the "
                          f"other {len(main.series.frames)} (a row or column direction reversed): flipped slices",
                          case.label, other, other.files))
        else:
            out.append(_f(spec, "INCONSISTENT_ORIENTATION", "error",
                          f"the series mixes orientations ({len(parts)} parts); it was split into separate volumes",
                          case.label, other, other.files))
    return out


# ------------------------------------------------------------------------------------------ geometry
@rule("geometry")
def rule_geometry(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-7.2: an explicit direction matrix that fixes orientation (orthonormal Image Orientation),
    spacing with units (Pixel Spacing) and an origin (Image Position) on every volume slice."""
    out = []
    for p in ctx.scan.problems:  # series the loader could not build (a sheared orientation ...)
        if p.code == ProblemCode.INVALID_GEOMETRY:
            code = "NON_ORTHONORMAL_DIRECTION" if "orthonormal" in p.message else "INVALID_GEOMETRY"
            out.append(_f(spec, code, "error", p.message, ctx.case_of_file(p.files[0]) if p.files else "",
                          files=p.files))
    for case, view in _series_findings(ctx, spec):
        s = view.series
        volume = s.modality in _VOLUME_MODALITIES
        for p in s.problems:
            if p.code == ProblemCode.MISSING_GEOMETRY:
                out.append(_f(spec, "MISSING_GEOMETRY", "error", p.message, case.label, view, p.files))
            elif p.code == ProblemCode.NO_PATIENT_GEOMETRY and volume:
                out.append(_f(spec, "NO_PATIENT_GEOMETRY", "error",
                              f"{s.modality} image without Image Position/Orientation (Patient): no origin or "
                              "direction",
                              case.label, view, p.files))
            elif p.code == ProblemCode.NO_PIXEL_SPACING:
                out.append(_f(spec, "NO_PIXEL_SPACING", "error" if volume else "warning", p.message, case.label,
                              view, p.files))
            elif p.code == ProblemCode.GANTRY_TILT:
                out.append(_f(spec, "GANTRY_TILT", "warning", p.message, case.label, view, p.files))
        orientation = s.frames[0].orientation
        if orientation is not None:
            r, c = np.array(orientation[:3]), np.array(orientation[3:])
            err = max(abs(np.linalg.norm(r) - 1), abs(np.linalg.norm(c) - 1), abs(float(r @ c)))
            if err > 1e-3:
                out.append(_f(spec, "NON_ORTHONORMAL_DIRECTION", "error",
                              f"Image Orientation (Patient) is not two orthogonal unit vectors (deviation {err:.2g}): "
                              "the direction matrix does not fix the orientation", case.label, view,
                              (s.frames[0].path,)))
    return out


# ------------------------------------------------------------------------------------------ pixel values
def _sample(view: SeriesView, n: int) -> SeriesView:
    frames = view.series.frames
    if len(frames) <= n:
        return view
    index = np.unique(np.linspace(0, len(frames) - 1, n).round().astype(int))
    subset = dataclasses.replace(view.series, frames=[frames[i] for i in index])
    return dataclasses.replace(view, series=subset)


@rule("pixel_values")
def rule_pixel_values(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-7.2: CT values in Hounsfield units (rescale present, values in a plausible range, air near
    -1000); MR without signal dropout (a slice far darker than both neighbours) or a severe bias
    field (a log-linear left-right trend of the foreground signal) - the MR checks are
    heuristics and warn."""
    out = []
    p = spec.params
    for case, view in _series_findings(ctx, spec):
        s = view.series
        if s.modality == "CT":
            if p.get("require_rescale", False) and not view.rescale_present:
                out.append(_f(spec, "CT_NO_RESCALE", spec.severity,
                              "CT without Rescale Slope/Intercept (0028,1053)/(0028,1052): values are not known to be "
                              "Hounsfield units", case.label, view, (s.frames[0].path,)))
            if not p.get("read_pixels", True):
                continue
            voxels = _read(view if len(s.frames) <= 24 else _sample(view, 24), case, spec, out)
            if voxels is None:
                continue
            values = voxels[voxels > p.get("padding_hu", -2000)].astype(np.float64)
            if values.size == 0:
                out.append(_f(spec, "CT_HU_IMPLAUSIBLE", spec.severity, "every sampled value is padding",
                              case.label, view))
                continue
            low, high, p1 = (float(v) for v in np.percentile(values, [0.5, 99.9, 1.0]))
            if low < p.get("hu_min", -1200) or high > p.get("hu_max", 4000):
                out.append(_f(spec, "CT_HU_IMPLAUSIBLE", spec.severity,
                              f"values from {low:.0f} to {high:.0f} HU (0.5th-99.9th percentile of sampled slices) "
                              f"leave the plausible range {p.get('hu_min', -1200):g}..{p.get('hu_max', 4000):g} HU",
                              case.label, view))
            elif p1 > -500 and float(np.median(values)) > 0:
                out.append(_f(spec, "CT_NOT_HU", spec.severity,
                              f"no air in the sampled slices (1st percentile {p1:.0f}, median "
                              f"{float(np.median(values)):.0f}): the values do not look like Hounsfield units",
                              case.label, view))
        elif s.modality == "MR" and p.get("read_pixels", True) and len(s.frames) >= 3:
            voxels = _read(view, case, spec, out)
            if voxels is None:
                continue
            out.extend(_mr_checks(spec, case, view, voxels.astype(np.float64), p))
    return out


def _read(view: SeriesView, case: Case, spec: RuleSpec, out: List[Finding]) -> Optional[np.ndarray]:
    if any(p.code == ProblemCode.UNDECODABLE_TRANSFER_SYNTAX for p in view.series.problems):
        out.append(_f(spec, "UNDECODABLE_PIXELS", "error",
                      "pixel data cannot be decoded here: "
                      + next(p.message for p in view.series.problems
                             if p.code == ProblemCode.UNDECODABLE_TRANSFER_SYNTAX), case.label, view))
        return None
    try:
        return read_volume(view.series).voxels
    except InputError as exc:
        out.append(_f(spec, "UNREADABLE_PIXELS", "error", str(exc), case.label, view,
                      (exc.file,) if exc.file else ()))
        return None


def _mr_checks(spec: RuleSpec, case: Case, view: SeriesView, v: np.ndarray, p: Dict[str, Any]) -> List[Finding]:
    out: List[Finding] = []
    if v.ndim != 3:
        return out
    means = v.reshape(v.shape[0], -1).mean(axis=1)
    level = float(np.percentile(v, 99)) * 0.02
    ratio = float(p.get("dropout_ratio", 0.5))
    dips = [k for k in range(1, len(means) - 1)
            if min(means[k - 1], means[k + 1]) > level and means[k] < ratio * min(means[k - 1], means[k + 1])]
    if dips:
        files = [view.series.frames[k].path for k in dips]
        out.append(_f(spec, "MR_SIGNAL_DROPOUT", "warning",
                      f"{len(dips)} slice(s) with mean signal below {ratio:g} x both neighbours (slice index "
                      f"{', '.join(map(str, dips[:10]))}): signal dropout suspected (heuristic)", case.label, view,
                      files))
    threshold = float(np.percentile(v, 99)) * 0.1
    mask = v > threshold
    if mask.sum() > 1000:
        # log-signal of the foreground fitted linearly along the patient's left-right axis: anatomy is
        # symmetric, so the slope is the bias field; the ratio is its gain across the foreground
        # (1.00-1.04 on the generated heads, 1.33 with a 0.3-1.7 gain ramp across the field of view)
        k, j, i = np.nonzero(mask)
        step = max(1, len(i) // 200000)
        points = np.stack([i[::step], j[::step], k[::step]], axis=1).astype(np.float64)
        x = view.series.geometry.ijk_to_lps(points)[:, 0]
        logs = np.log(v[k[::step], j[::step], i[::step]])
        span = float(np.percentile(x, 95) - np.percentile(x, 5))
        if span > 0:
            slope = float(np.polyfit(x, logs, 1)[0])
            lr = float(np.exp(abs(slope) * span))
            if lr > float(p.get("bias_ratio", 1.25)):
                out.append(_f(spec, "MR_BIAS_FIELD", "warning",
                              f"foreground signal changes {lr:.2f}-fold from the patient's right to left "
                              f"({span:.0f} mm): a severe bias field is suspected (heuristic; N4 correction "
                              "advised)", case.label, view))
    return out


# ------------------------------------------------------------------------------------------ seed 001
@rule("transfer_syntax")
def rule_transfer_syntax(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-001: only the listed (uncompressed) transfer syntaxes."""
    allowed = set(spec.params.get("allowed", []))
    out = []
    for case, view in _series_findings(ctx, spec):
        for ts in view.series.transfer_syntaxes:
            if ts not in allowed:
                files = [f.path for f in view.series.frames if f.pixels.transfer_syntax == ts]
                out.append(_f(spec, "COMPRESSED_TRANSFER_SYNTAX", spec.severity,
                              f"pixel data stored as {transfer_syntax_name(ts)}; only uncompressed syntaxes are "
                              "accepted (compression may lose image information)", case.label, view,
                              sorted(set(files))))
    return out


@rule("image_size")
def rule_image_size(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-001: at least ``min_rows`` x ``min_columns`` pixels per slice."""
    rows_min, cols_min = int(spec.params.get("min_rows", 1)), int(spec.params.get("min_columns", 1))
    out = []
    for case, view in _series_findings(ctx, spec):
        fmt = view.series.frames[0].fmt
        if fmt.rows < rows_min or fmt.columns < cols_min:
            out.append(_f(spec, "IMAGE_TOO_SMALL", spec.severity,
                          f"{fmt.columns} x {fmt.rows} pixels per slice (columns x rows); at least "
                          f"{cols_min} x {rows_min} required", case.label, view, view.files))
    return out


def _thickness(view: SeriesView) -> Tuple[Optional[float], bool]:
    """(median Slice Thickness, uniform?) of a series; the slice spacing when the attribute is absent."""
    values = [f.slice_thickness for f in view.series.frames if f.slice_thickness is not None]
    if not values:
        if len(view.series.frames) > 1:
            return float(view.series.geometry.spacing_mm[2]), True
        return None, True
    arr = np.array(values)
    return float(np.median(arr)), bool(np.ptp(arr) <= 1e-3)


def _is_thin(view: SeriesView, spec: Optional[RuleSpec]) -> bool:
    if spec is None:
        return True
    t, _ = _thickness(view)
    tol = float(spec.params.get("tolerance_mm", 0.01))
    return t is not None and spec.params.get("min_mm", 0) - tol <= t <= spec.params.get("max_mm", 1e9) + tol


@rule("slice_thickness")
def rule_slice_thickness(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-001: thin slices (``min_mm``..``max_mm``), or - when ``thick_allowed`` - the one thick
    thickness declared for the batch (``--declare-thickness``), the same on every thick series."""
    p = spec.params
    tol = float(p.get("tolerance_mm", 0.01))
    lo, hi = float(p.get("min_mm", 0.0)), float(p.get("max_mm", 1e9))
    declared = ctx.declared_thickness_mm
    out = []
    for case, view in _series_findings(ctx, spec):
        if view.modality in _PROJECTION:
            continue
        t, uniform = _thickness(view)
        if t is None:
            out.append(_f(spec, "SLICE_THICKNESS_UNKNOWN", spec.severity,
                          "no Slice Thickness (0018,0050) and a single slice: the thickness is unknown",
                          case.label, view, view.files[:1]))
            continue
        if not uniform:
            out.append(_f(spec, "SLICE_THICKNESS_VARIES", spec.severity,
                          "Slice Thickness differs between the slices of the series", case.label, view, view.files))
        if lo - tol <= t <= hi + tol:
            continue
        if p.get("thick_allowed") and declared is not None:
            if abs(t - declared) <= tol:
                continue
            message = (f"slice thickness {t:g} mm is neither thin ({lo:g}-{hi:g} mm) nor the thickness declared "
                       f"for this batch ({declared:g} mm)")
        elif p.get("thick_allowed"):
            message = (f"slice thickness {t:g} mm is outside {lo:g}-{hi:g} mm and no thick thickness was declared "
                       "for the batch (declare it with --declare-thickness MM; it must be the same for every thick "
                       "series)")
        else:
            message = f"slice thickness {t:g} mm is outside {lo:g}-{hi:g} mm"
        out.append(_f(spec, "SLICE_THICKNESS", spec.severity, message, case.label, view, view.files))
    return out


@rule("slice_count")
def rule_slice_count(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-001: ``min``..``max`` slices per (thin) series."""
    p = spec.params
    thin_rule = ctx.profile.rule("slice_thickness") if p.get("thin_only") else None
    lo, hi = int(p.get("min", 0)), p.get("max")
    out = []
    for case, view in _series_findings(ctx, spec):
        if view.modality in _PROJECTION or (p.get("thin_only") and not _is_thin(view, thin_rule)):
            continue
        n = len(view.series.frames)
        if n < lo or (hi is not None and n > int(hi)):
            limit = f"{lo}-{hi}" if hi is not None else f"at least {lo}"
            out.append(_f(spec, "SLICE_COUNT", spec.severity,
                          f"{n} slices; {limit} required" + (" for thin-slice data" if p.get("thin_only") else ""),
                          case.label, view, view.files))
    return out


@rule("folder_layout")
def rule_folder_layout(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-001 (recommended): image files at the depth of the levels, e.g. class/patient/series/images."""
    levels = list(spec.params.get("levels", ["class", "patient", "series", "images"]))
    out = []
    for case in ctx.cases:
        files = [f for v in case.series for f in v.files] + case.other_objects
        wrong = [f for f in files if len(os.path.relpath(f, ctx.root).split(os.sep)) != len(levels)]
        if wrong:
            out.append(_f(spec, "FOLDER_LAYOUT", spec.severity,
                          f"{len(wrong)} of {len(files)} file(s) are not at {' / '.join(levels)} depth "
                          f"({len(levels)} levels below the checked folder)", case.label, files=wrong))
    return out


@rule("case_count")
def rule_case_count(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-6.3: the batch holds ``min``..``max`` cases."""
    n = len(ctx.cases)
    lo, hi = int(spec.params.get("min", 0)), spec.params.get("max")
    if n < lo or (hi is not None and n > int(hi)):
        limit = f"{lo}-{hi}" if hi is not None else f"at least {lo}"
        return [_f(spec, "CASE_COUNT", spec.severity, f"{n} case(s) in the batch; {limit} expected")]
    return []


@rule("metadata_consistency")
def rule_metadata_consistency(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-6.3: Patient ID, name, birth date and sex agree across the series of a case (compared as
    hashes; the values are never reported)."""
    out = []
    for case in ctx.cases:
        if len(case.series) < 2:
            continue
        differing = []
        for attribute in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"):
            values = {v.identity_hashes.get(attribute, "") for v in case.series}
            if len(values) > 1:
                differing.append(attribute)
        if differing:
            out.append(_f(spec, "INCONSISTENT_PATIENT", spec.severity,
                          f"the series of this case disagree on {', '.join(differing)}", case.label,
                          files=[v.files[0] for v in case.series]))
    return out


# ------------------------------------------------------------------------------------------ records
def _read_table(path: str) -> List[Dict[str, str]]:
    lower = path.lower()
    if lower.endswith((".csv", ".tsv", ".txt")):
        with open(path, encoding="utf-8-sig", newline="") as fh:
            sample = fh.read(4096)
            fh.seek(0)
            delimiter = "\t" if lower.endswith(".tsv") or sample.count("\t") > sample.count(",") else ","
            return [{str(k).strip(): str(v or "").strip() for k, v in row.items() if k is not None}
                    for row in csv.DictReader(fh, delimiter=delimiter)]
    if lower.endswith(".json"):
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError("a structured record in JSON must be a list of objects", file=path, field="JSON")
        return [{str(k): str(v) for k, v in r.items()} for r in data]
    if lower.endswith((".xlsx", ".xlsm")):
        try:
            import openpyxl
        except ImportError as exc:
            raise InputError("reading .xlsx needs openpyxl (pip install openpyxl)", file=path,
                             field="records") from exc
        sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).active
        rows = [["" if c is None else str(c).strip() for c in row] for row in sheet.iter_rows(values_only=True)]
        if not rows:
            return []
        header = rows[0]
        return [dict(zip(header, r)) for r in rows[1:]]
    raise InputError("unsupported structured record format (CSV, TSV, JSON or XLSX)", file=path, field="records")


@rule("records")
def rule_records(ctx: CheckContext, spec: RuleSpec) -> List[Finding]:
    """R-6.3: the case's text and structured records exist and pair with the image data.

    A structured record at batch level (a clinical table) must have exactly one row per case (by
    Patient ID or case folder name) and no row without a case; rows are named by number, cases
    by folder - identifiers are never quoted.
    """
    out = []
    for record in spec.params.get("records", []):
        patterns = [p.lower() for p in record["patterns"]]

        def matches(path: str, patterns: List[str] = patterns) -> bool:
            return any(fnmatch.fnmatch(os.path.basename(path).lower(), p) for p in patterns)

        if record["location"] == "case":
            for case in ctx.cases:
                found = [f for f in case.data_files if matches(f)]
                if not found and record["required"]:
                    out.append(_f(spec, "RECORD_MISSING", spec.severity,
                                  f"no {record['name']} ({', '.join(record['patterns'])}) in the case folder",
                                  case.label))
            continue
        top = [f for f in ctx.data_files if os.path.dirname(os.path.abspath(f)) == os.path.abspath(ctx.root)
               and matches(f)]
        if not top:
            if record["required"]:
                out.append(_f(spec, "RECORD_MISSING", spec.severity,
                              f"no {record['name']} ({', '.join(record['patterns'])}) at the top of the batch"))
            continue
        if record["kind"] != "structured" or not record.get("key_column"):
            continue
        for table in top:
            try:
                rows = _read_table(table)
            except (InputError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                out.append(_f(spec, "RECORD_UNREADABLE", spec.severity, f"{record['name']} cannot be read: {exc}",
                              files=(table,)))
                continue
            column = record["key_column"]
            if rows and column not in rows[0]:
                out.append(_f(spec, "RECORD_UNREADABLE", spec.severity,
                              f"{record['name']} has no column {column!r} to pair rows with cases", files=(table,)))
                continue
            keys = [r.get(column, "").strip() for r in rows]
            case_keys = {case.label: _case_key(ctx, case, record.get("case_key", "PatientID")) for case in ctx.cases}
            for label, key in case_keys.items():
                n = sum(1 for k in keys if k and k in key)
                if n == 0:
                    out.append(_f(spec, "RECORD_UNPAIRED_CASE", spec.severity,
                                  f"the case has no row in {record['name']} {os.path.basename(table)}", label,
                                  files=(table,)))
                elif n > 1:
                    out.append(_f(spec, "RECORD_DUPLICATE_ROWS", spec.severity,
                                  f"the case has {n} rows in {record['name']} {os.path.basename(table)}", label,
                                  files=(table,)))
            all_keys = set().union(*case_keys.values()) if case_keys else set()
            orphans = [i + 2 for i, k in enumerate(keys) if k not in all_keys]  # +2: header line, 1-based
            if orphans:
                out.append(_f(spec, "RECORD_UNPAIRED_ROW", spec.severity,
                              f"{len(orphans)} row(s) of {os.path.basename(table)} match no case (line "
                              f"{', '.join(map(str, orphans[:20]))})", files=(table,)))
    return out


def _case_key(ctx: CheckContext, case: Case, kind: str) -> set:
    if kind == "case_folder":
        return {os.path.basename(os.path.normpath(case.folder))}
    return {v.patient_id for v in case.series} - {""}
