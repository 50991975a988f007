"""``mmanno demo``: the headless main job on a generated sample case, ending in a written report.

Steps today (each later capability adds its own): generate the sample case; inspect every
series (problems listed); load each volume and check its geometry against the generator's
record; export each volume to NIfTI and read it back (voxels identical, geometry within
NIfTI-1's float32 precision); check that every ground-truth mask sits on the grid of its
series; export the ground truth of the primary series as an RT Structure Set onto its DICOM
series, import it back and check that every ROI comes back exactly (Dice 1.0), and import the
structure set the sample ships with (ct-chest, mr-brain-mets) against the same labels (R-5.7);
write ``report.json`` and a self-contained ``report.html``. The exit status is 0 when every check
passed and 1 otherwise (the report says which).
"""

from __future__ import annotations

import argparse
import html
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from RTSSBridgeLib.cli import inspect_path
from RTSSBridgeLib.cliutil import EXIT_FAILED_CHECK, EXIT_OK, Progress, add_json_option, emit_json
from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
from RTSSBridgeLib.fileio import write_json_atomic, write_text_atomic
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.nifti import read_nifti, write_nifti

from . import __version__

#: A geometry read back from NIfTI-1 may differ by float32 rounding of the affine.
NIFTI1_TOLERANCE_MM = 1e-3
DICOM_TOLERANCE_MM = 1e-4


def _check(name: str, passed: bool, detail: str, **numbers: Any) -> Dict[str, Any]:
    return {"check": name, "passed": bool(passed), "detail": detail, **numbers}


def run_demo(out: Path, kind: str = "ct-chest", seed: int = 0, quiet: bool = False) -> Dict[str, Any]:
    """Run the pipeline into the new folder ``out`` and return the report (also written there)."""
    from RTSSBridgeLib.samples import write_sample

    started = time.monotonic()
    timings: Dict[str, float] = {}
    t = time.monotonic()
    case = write_sample(kind, out / "case", seed=seed, progress=Progress(f"writing {kind}", enabled=not quiet))
    timings["generate_s"] = time.monotonic() - t
    manifest = json.loads(Path(case.manifest).read_text(encoding="utf-8"))
    recorded = {s["series_instance_uid"]: s for s in manifest["series"]}

    t = time.monotonic()
    inspected = inspect_path(str(out / "case" / "dicom"), read_voxels=False)
    timings["inspect_s"] = time.monotonic() - t

    checks: List[Dict[str, Any]] = []
    series_rows: List[Dict[str, Any]] = []
    scan = scan_dicom(out / "case" / "dicom")
    t = time.monotonic()
    for series in scan.series:
        volume = read_volume(series)
        record = recorded.get(series.series_uid)
        key = record["key"] if record else series.series_uid[-8:]
        label = f"{key} part {series.part}" if series.n_parts > 1 else key
        row = {"key": label, **series.summary()}
        series_rows.append(row)
        if record is not None and series.n_parts == 1:
            expected = ImageGeometry.from_dict(record["geometry"])
            distance = series.geometry.max_corner_distance_mm(expected)
            checks.append(_check(f"{label}: DICOM geometry equals the generator's", distance <= DICOM_TOLERANCE_MM,
                                 f"largest corner distance {distance:.2e} mm (tolerance {DICOM_TOLERANCE_MM:g})",
                                 distance_mm=distance))
        nifti_path = out / "nifti" / f"{label.replace(' ', '_')}.nii.gz"
        write_nifti(nifti_path, volume.voxels, series.geometry, description=f"{series.modality} {key}")
        back = read_nifti(nifti_path)
        same = bool(np.array_equal(back.voxels, volume.voxels))
        distance = back.geometry.max_corner_distance_mm(series.geometry)
        checks.append(_check(f"{label}: NIfTI round trip", same and distance <= NIFTI1_TOLERANCE_MM,
                             f"voxels {'identical' if same else 'DIFFER'}; geometry within {distance:.2e} mm",
                             distance_mm=distance))
        row["nifti"] = str(nifti_path.relative_to(out))
    timings["load_and_export_s"] = time.monotonic() - t

    by_key = {s["key"]: s for s in manifest["series"]}
    for entry in manifest.get("ground_truth", []):
        path = out / "case" / entry["path"]
        if not entry["path"].endswith((".nii", ".nii.gz")):
            continue
        target = by_key.get(entry.get("series_key", ""))
        mask = read_nifti(path)
        if target is None:
            continue
        distance = mask.geometry.max_corner_distance_mm(ImageGeometry.from_dict(target["geometry"]))
        labels = sorted(int(v) for v in np.unique(mask.voxels) if v != 0)
        checks.append(_check(f"ground truth {entry['path']} on the {target['key']} grid",
                             distance <= NIFTI1_TOLERANCE_MM and bool(labels),
                             f"grid distance {distance:.2e} mm; labels present {labels}", distance_mm=distance))

    t = time.monotonic()
    rtss = structure_set_round_trip(out, manifest, scan, checks)
    timings["rtss_s"] = time.monotonic() - t

    problems = [dict(p, series=e["series_uid"]) for e in inspected for p in e["problems"]]
    report = {
        "report": "mmanno demo",
        "software": {"name": "MultiModalAnnotation", "version": __version__},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "case": {"kind": kind, "seed": seed, "path": "case", "n_series": len(scan.series),
                 "n_files": scan.n_files},
        "series": series_rows,
        "rtss": rtss,
        "problems": problems,
        "checks": checks,
        "passed": all(c["passed"] for c in checks) and bool(checks),
        "timings": {**timings, "total_s": time.monotonic() - started},
    }
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.html", render_html(report))
    return report


def structure_set_round_trip(out: Path, manifest: Dict[str, Any], scan: Any,
                             checks: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Ground truth -> RTSS on the primary DICOM series -> masks again: Dice 1.0 per ROI (R-5.7).

    Also imports the structure set the sample ships with and compares it with the same labels.
    Returns the report section (None for kinds without a 3-D labelled series).
    """
    from RTSSBridgeLib.roi import RoiMask, dice
    from RTSSBridgeLib.rtss_export import ExportOptions, export_rtss
    from RTSSBridgeLib.rtss_import import import_rtss
    from RTSSBridgeLib.structures import ReferenceGrid, Roi

    by_key = {s["key"]: s for s in manifest["series"]}
    primary = next((s for s in manifest["series"] if s["role"] == "primary"), None)
    entry = next((g for g in manifest.get("ground_truth", []) if g["format"] == "nifti" and primary is not None
                  and g.get("series_key") == primary["key"] and g.get("labels")), None)
    if primary is None or entry is None or not primary.get("frame_of_reference_uid"):
        return None
    series = next((s for s in scan.series if s.series_uid == primary["series_instance_uid"]), None)
    if series is None:
        return None
    labels = read_nifti(out / "case" / entry["path"]).voxels
    names = {int(item["value"]): str(item["name"]) for item in entry["labels"]}
    rois = [Roi(n, names.get(value, f"Label {value}")[:64], RoiMask.from_full(labels == value),
                generation_algorithm="MANUAL")
            for n, value in enumerate(sorted(int(v) for v in np.unique(labels) if v != 0), start=1)]
    grid = ReferenceGrid.from_series(series)
    path = out / "rtss" / "ground_truth_rtss.dcm"
    t = time.monotonic()
    exported = export_rtss(rois, grid, path, options=ExportOptions(structure_set_label="GROUND TRUTH"))
    export_s = time.monotonic() - t
    t = time.monotonic()
    back = import_rtss(path, out / "case" / "dicom", series_uid=series.series_uid)
    import_s = time.monotonic() - t
    rows = []
    for original, imported in zip(exported.rois, back.rois):
        assert original.mask is not None
        score = dice(original.mask, imported.mask) if imported.mask is not None else 0.0
        rows.append({"roi": original.name, "voxels": original.voxel_count(), "contours": original.n_contours,
                     "dice": score, "warnings": len(imported.problems)})
    exact = bool(rows) and all(r["dice"] == 1.0 and r["warnings"] == 0 for r in rows) and len(back.rois) == len(rois)
    checks.append(_check(f"ground truth -> RTSS -> masks on {primary['key']} is exact",
                         exact, f"{len(rows)} ROI(s), Dice " + ", ".join(f"{r['dice']:.6f}" for r in rows)
                         + f"; export {export_s:.2f} s, import {import_s:.2f} s", n_rois=len(rows)))
    section: Dict[str, Any] = {"series_key": primary["key"], "file": str(path.relative_to(out)), "rois": rows,
                               "export_s": export_s, "import_s": import_s, "shipped": None}
    shipped = (manifest.get("structure_sets") or [None])[0]
    if shipped is not None and shipped["referenced_series_key"] in by_key:
        result = import_rtss(out / "case" / shipped["dir"] / shipped["file"], out / "case" / "dicom")
        scores = [(spec["roi_name"], dice(RoiMask.from_full(labels == spec["label_value"]), roi.mask)
                   if roi.mask is not None else 0.0) for spec, roi in zip(shipped["rois"], result.rois)]
        ok = len(scores) == len(shipped["rois"]) and all(score == 1.0 for _, score in scores) \
            and not result.all_problems()
        checks.append(_check(f"the sample's RT Structure Set ({len(scores)} ROIs) matches its ground truth", ok,
                             ", ".join(f"{name} Dice {score:.6f}" for name, score in scores)))
        section["shipped"] = {"file": f"case/{shipped['dir']}/{shipped['file']}",
                              "rois": [{"roi": name, "dice": score} for name, score in scores],
                              "warnings": [p.line() for p in result.all_problems()]}
    return section


def render_html(report: Dict[str, Any]) -> str:
    """A self-contained HTML page (no external resources) of the demo report."""
    esc = html.escape
    verdict = "all checks passed" if report["passed"] else "SOME CHECKS FAILED"
    rows = []
    for s in report["series"]:
        rows.append(
            "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
                s["key"], s["modality"], "×".join(map(str, s["shape"])),
                " × ".join(f"{v:.4g}" for v in s["spacing_mm"]),
                ", ".join(f"{v:.2f}" for v in s["origin_lps"]), s["axis_codes"], s["n_files"],
                len(s["problems"]))) + "</tr>")
    check_rows = "".join(
        f"<tr class={'ok' if c['passed'] else 'bad'}><td>{'✔' if c['passed'] else '✘'}</td>"
        f"<td>{esc(c['check'])}</td><td>{esc(c['detail'])}</td></tr>" for c in report["checks"])
    problem_rows = "".join(
        f"<tr><td>{esc(p['severity'])}</td><td>{esc(p['code'])}</td><td>{esc(p['message'])}</td>"
        f"<td>{esc(', '.join(Path(f).name for f in p['files'][:4]))}</td></tr>" for p in report["problems"]
    ) or "<tr><td colspan=4>none</td></tr>"
    timing = ", ".join(f"{k.replace('_s', '')} {v:.2f} s" for k, v in report["timings"].items())
    rtss = report.get("rtss")
    if rtss:
        rtss_rows = "".join(f"<tr><td>{esc(r['roi'])}</td><td>{r['voxels']}</td><td>{r['contours']}</td>"
                            f"<td>{r['dice']:.6f}</td></tr>" for r in rtss["rois"])
        rtss_html = (f"<h2>RT Structure Set round trip ({esc(rtss['series_key'])})</h2><p>Ground truth exported to "
                     f"{esc(rtss['file'])} in {rtss['export_s']:.2f} s and imported back in {rtss['import_s']:.2f} s."
                     "</p><table><tr><th>ROI</th><th>voxels</th><th>contours</th><th>Dice after the round trip</th>"
                     f"</tr>{rtss_rows}</table>")
    else:
        rtss_html = "<h2>RT Structure Set round trip</h2><p>Not applicable: no 3-D labelled series.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mmanno demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ background: #f0f0f0; }} tr.ok td:first-child {{ color: #080; }} tr.bad td {{ background: #fdd; }}
.verdict {{ font-size: 1.3em; font-weight: bold; color: {'#080' if report['passed'] else '#b00'}; }}
</style></head><body>
<h1>MultiModalAnnotation — headless pipeline report</h1>
<p>Software {esc(report['software']['version'])}, created {esc(report['created_utc'])} (UTC).
Sample case <b>{esc(report['case']['kind'])}</b> (seed {report['case']['seed']}):
{report['case']['n_series']} series in {report['case']['n_files']} files.</p>
<p class="verdict">{verdict}</p>
<h2>Series</h2>
<table><tr><th>series</th><th>modality</th><th>shape i×j×k</th><th>spacing (mm)</th><th>origin (LPS, mm)</th>
<th>axes</th><th>files</th><th>problems</th></tr>{''.join(rows)}</table>
<h2>Checks</h2><table><tr><th></th><th>check</th><th>result</th></tr>{check_rows}</table>
{rtss_html}
<h2>Problems found while loading</h2>
<table><tr><th>severity</th><th>code</th><th>message</th><th>files</th></tr>{problem_rows}</table>
<p>Timings: {esc(timing)}.</p>
</body></html>
"""


def _cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    from RTSSBridgeLib.fileio import atomic_directory

    with atomic_directory(out) as tmp:
        report = run_demo(tmp, kind=args.kind, seed=args.seed, quiet=args.quiet)
    emit_json(args.json, report)
    if args.json != "-":
        for c in report["checks"]:
            print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['check']}: {c['detail']}")
        print(f"report: {out / 'report.html'}")
    return EXIT_OK if report["passed"] else EXIT_FAILED_CHECK


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run the headless pipeline on a generated sample case and write a report",
        description="The main job: generate a sample case, inspect and load every series, export to NIfTI and "
                    "read back, check geometry and ground truth, export the ground truth as an RT Structure Set and "
                    "import it back (Dice 1.0 per ROI), and write report.json and report.html into OUT "
                    "(a new folder). Exit 0 when every check passed, 1 otherwise.",
    )
    p.add_argument("--out", required=True, help="new (or empty) output folder")
    p.add_argument("--kind", default="ct-chest",
                   choices=("ct-chest", "mr-brain-mets", "pet-ct", "us-thyroid", "xray-ra"), help="sample kind")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(p)
    p.set_defaults(func=_cmd_demo)
