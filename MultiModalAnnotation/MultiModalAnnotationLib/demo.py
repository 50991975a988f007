"""``mmanno demo``: the headless main job on a generated sample case, ending in a written report.

Steps today (each later capability adds its own): generate the sample case; admission check
(screening and the profile's rules: lung-radiomics-ct for ct-chest, generic otherwise) and
de-identification (brain-mets-mr, ra-xray or basic with a key made for the run, registry in
``private/``), with the leak check (zero leaks) and the image check (same geometry and voxels);
then, on the de-identified data only: inspect every series (problems listed); load each volume
and check its geometry against the generator's record; export each volume to NIfTI and read it
back (voxels identical, geometry within NIfTI-1's float32 precision); check that every
ground-truth mask sits on the grid of its series; build the annotation document of the ground
truth with the matching built-in label template (Appendix C, checked against the template and the
image grid), export it as a package (masks as NIfTI, template, manifest with SHA-256), verify the
package and read it back (masks voxel for voxel), and export the template to Slicer, dcmqi,
nnU-Net and CSV formats (the CSVs read back to the same template); write ``report.json`` and a
self-contained ``report.html``. The exit status is 0 when every check passed and 1 otherwise (the
report says which).
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Set

import numpy as np

from RTSSBridgeLib.cli import inspect_path
from RTSSBridgeLib.cliutil import EXIT_FAILED_CHECK, EXIT_OK, Progress, add_json_option, emit_json
from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
from RTSSBridgeLib.fileio import write_json_atomic, write_text_atomic
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.nifti import read_nifti, write_nifti
from RTSSBridgeLib.uids import keyed_uid

from . import __version__

#: A geometry read back from NIfTI-1 may differ by float32 rounding of the affine.
NIFTI1_TOLERANCE_MM = 1e-3
DICOM_TOLERANCE_MM = 1e-4


def _check(name: str, passed: bool, detail: str, **numbers: Any) -> Dict[str, Any]:
    return {"check": name, "passed": bool(passed), "detail": detail, **numbers}


#: Admission and de-identification profiles of each sample kind in the demo.
ADMISSION_PROFILE = {"ct-chest": "lung-radiomics-ct"}
DEID_PROFILE = {"mr-brain-mets": "brain-mets-mr", "xray-ra": "ra-xray"}


def run_intake(out: Path, case_root: Path, kind: str, quiet: bool = False) -> Dict[str, Any]:
    """Admission check, de-identification, leak check and image check of the generated case
    (R-6.3, R-6.4, R-7.3). Returns the report section, its checks, the de-identified folder and
    the key (to pair generator records with pseudonymised UIDs)."""
    from RTSSBridgeLib.admission.check import run_check
    from RTSSBridgeLib.admission.report import render_admission_html
    from RTSSBridgeLib.deid.batch import deidentify_folder
    from RTSSBridgeLib.deid.keys import generate_key_file, read_key_file
    from RTSSBridgeLib.deid.registry import make_private_folder
    from RTSSBridgeLib.deid.verify import compare_series, verify_output

    timings: Dict[str, float] = {}
    t = time.monotonic()
    admission_profile = ADMISSION_PROFILE.get(kind, "generic")
    admission = run_check(str(case_root), admission_profile, quarantine=str(out / "admission-quarantine"))
    write_json_atomic(out / "admission.json", admission)
    write_text_atomic(out / "admission.html", render_admission_html(admission))
    timings["admission_s"] = time.monotonic() - t
    private = Path(make_private_folder(str(out / "private")))
    key_file = private / "demo.key"
    generate_key_file(str(key_file))
    deid_profile = DEID_PROFILE.get(kind, "basic")
    options = [] if kind in DEID_PROFILE else ["retain_longitudinal_modified_dates", "retain_patient_characteristics"]
    t = time.monotonic()
    record = deidentify_folder(str(case_root), str(out / "deidentified"), deid_profile, str(key_file), options=options,
                               private_folder=str(private / "registry"),
                               progress=Progress("de-identifying", enabled=not quiet))
    timings["deidentify_s"] = time.monotonic() - t
    t = time.monotonic()
    leaks = verify_output(str(out / "deidentified"), str(case_root))
    images = compare_series(str(case_root), str(out / "deidentified"))
    timings["verify_s"] = time.monotonic() - t
    checks = [
        _check("admission: no blocking finding", admission["n_blocking"] == 0,
               f"profile {admission_profile}: {admission['verdict']}, {admission['n_cases']} case(s), "
               f"{sum(admission['findings_by_severity'].values())} finding(s), "
               f"{len(admission['quarantine']['files'])} file(s) quarantined"),
        _check("de-identification: every image written", record["counts"]["skipped"] ==
               record["counts"]["skipped_by_reason"].get("NOT_DICOM", 0) and record["counts"]["written"] > 0,
               f"profile {deid_profile} (key {record['key_fingerprint']}): {record['counts']['written']} file(s), "
               f"{record['counts']['elements'].get('private_removed', 0)} private element(s) removed"),
        _check("leak check: zero leaks", leaks["passed"],
               f"{leaks['elements_scanned']} elements of {leaks['output_dicom_files']} file(s) searched for "
               f"{leaks['identifying_tokens']} identifying values and {leaks['original_uids']} original UIDs: "
               f"{leaks['n_leaks']} leak(s)"
               + (f"; {len(leaks['retained_by_declared_option'])} device value(s) retained by the declared option"
                  if leaks["retained_by_declared_option"] else ""), n_leaks=leaks["n_leaks"]),
        _check("de-identified images: same geometry and voxels", images["passed"],
               f"{images['matched']} of {images['original_series']} series bit-identical"),
    ]
    section = {"admission_profile": admission_profile, "verdict": admission["verdict"],
               "n_blocking": admission["n_blocking"], "deid_profile": deid_profile,
               "options": record["profile"]["options"], "key_fingerprint": record["key_fingerprint"],
               "files_written": record["counts"]["written"], "cases": record["cases"],
               "burned_in_annotation": len(record["burned_in_annotation"]), "n_leaks": leaks["n_leaks"],
               "leaks_by_category": leaks["leaks_by_category"], "images_identical": images["passed"],
               "reports": {"admission": "admission.html", "record": "deidentified/deid-record.json"}}
    return {"section": section, "checks": checks, "timings": timings, "root": out / "deidentified",
            "key": read_key_file(str(key_file))}


def run_demo(out: Path, kind: str = "ct-chest", seed: int = 0, quiet: bool = False) -> Dict[str, Any]:
    """Run the pipeline into the new folder ``out`` and return the report (also written there)."""
    from RTSSBridgeLib.samples import write_sample

    started = time.monotonic()
    timings: Dict[str, float] = {}
    t = time.monotonic()
    case = write_sample(kind, out / "case", seed=seed, progress=Progress(f"writing {kind}", enabled=not quiet))
    timings["generate_s"] = time.monotonic() - t
    manifest = json.loads(Path(case.manifest).read_text(encoding="utf-8"))
    intake = run_intake(out, Path(case.root), kind, quiet)
    timings.update(intake["timings"])
    dicom_root = intake["root"]  # everything below works on the de-identified copy only
    recorded = {keyed_uid(intake["key"], s["series_instance_uid"]): s for s in manifest["series"]}

    t = time.monotonic()
    inspected = inspect_path(str(dicom_root), read_voxels=False)
    timings["inspect_s"] = time.monotonic() - t

    checks: List[Dict[str, Any]] = list(intake["checks"])
    series_rows: List[Dict[str, Any]] = []
    scan = scan_dicom(dicom_root)
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
    annotation = annotation_step(out, kind, checks, intake["key"], {s.series_uid for s in scan.series})
    timings["annotation_s"] = time.monotonic() - t

    problems = [dict(p, series=e["series_uid"]) for e in inspected for p in e["problems"]]
    report = {
        "report": "mmanno demo",
        "software": {"name": "MultiModalAnnotation", "version": __version__},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "case": {"kind": kind, "seed": seed, "path": "case", "n_series": len(scan.series),
                 "n_files": scan.n_files, "loaded_from": "deidentified"},
        "intake": intake["section"],
        "series": series_rows,
        "annotation": annotation,
        "problems": problems,
        "checks": checks,
        "passed": all(c["passed"] for c in checks) and bool(checks),
        "timings": {**timings, "total_s": time.monotonic() - started},
    }
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.html", render_html(report))
    return report


def annotation_step(out: Path, kind: str, checks: List[Dict[str, Any]], key: bytes,
                    deidentified_series: Set[str]) -> Dict[str, Any]:
    """Ground truth -> annotation document -> export package -> verify -> read back; template exports.

    The document names the de-identified image (its UIDs pseudonymised with the run's key), never
    the original (R-5.1: nothing enters annotation before de-identification)."""
    from .commands import export_template
    from .documents import validate_document
    from .package import export_package, read_package, verify_package
    from .sample_documents import SAMPLE_TEMPLATES, document_from_sample
    from .templates.exports import EXPORT_FORMATS, template_from_slicer_csv
    from .templates.tables import template_from_flat_csv

    if kind not in SAMPLE_TEMPLATES:
        return {"template": None, "note": f"no built-in label template for the {kind} sample"}
    document, masks, template = document_from_sample(out / "case")
    image = document.image
    image = dataclasses.replace(image, uid=keyed_uid(key, image.uid), frame_of_reference_uid=(
        keyed_uid(key, image.frame_of_reference_uid) if image.frame_of_reference_uid else ""))
    document = dataclasses.replace(document, image=image)
    checks.append(_check("annotation document names the de-identified image", image.uid in deidentified_series,
                         f"image UID is the pseudonym of the {image.series_key} series"))
    problems = validate_document(document, template)
    checks.append(_check(f"annotation document of the ground truth valid against {template.id} {template.version}",
                         not problems, "; ".join(problems[:3]) or
                         f"{len(document.annotations)} annotations on the {document.image.series_key} grid"))
    package_dir = out / "annotation_package"
    export_package(package_dir, document, template, masks=masks)
    report = verify_package(package_dir)
    checks.append(_check("export package matches its manifest (SHA-256 of every file)", report.ok,
                         "; ".join(report.lines()[:3]) or f"{report.n_files} files verified"))
    package = read_package(package_dir)
    same = all(np.array_equal(package.masks[i].voxels, m) for i, m in masks.items())
    checks.append(_check("package read back: masks identical, codes and attributes kept",
                         same and [a.id for a in package.document.annotations] == [a.id for a in document.annotations]
                         and all(a.data.get("attributes") == b.data.get("attributes")
                                 for a, b in zip(document.annotations, package.document.annotations)),
                         f"{len(masks)} mask(s) voxel for voxel"))
    exports = {}
    for fmt in EXPORT_FORMATS:
        suffix = {"slicer-csv": ".csv", "slicer-term": ".term.json", "dcmqi": ".dcmqi.json",
                  "nnunet": ".dataset.json", "csv": ".flat.csv"}[fmt]
        target = out / "template_exports" / f"{template.id}{suffix}"
        export_template(template, fmt, str(target))
        exports[fmt] = str(target.relative_to(out))
    text = (out / exports["slicer-csv"]).read_text(encoding="utf-8")
    flat = (out / exports["csv"]).read_text(encoding="utf-8")
    checks.append(_check("template exports: Slicer CSV and flat CSV read back to the same template",
                         template_from_slicer_csv(text) == template and template_from_flat_csv(flat) == template,
                         f"{', '.join(EXPORT_FORMATS)} written"))
    counts: Dict[str, int] = {}
    for item in document.annotations:
        counts[item.type] = counts.get(item.type, 0) + 1
    return {"template": f"{template.id} {template.version}", "task_id": document.task_id,
            "image": document.image.series_key, "annotations": len(document.annotations), "by_type": counts,
            "package": str(package_dir.relative_to(out)), "package_files": report.n_files, "exports": exports}


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
    annotation = report.get("annotation") or {}
    if annotation.get("template"):
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(annotation["by_type"].items()))
        annotation_html = (f"<p>Template <b>{esc(annotation['template'])}</b>, task {esc(annotation['task_id'])}: "
                           f"{annotation['annotations']} annotations ({esc(kinds)}) on the "
                           f"{esc(annotation['image'])} grid. Package <code>{esc(annotation['package'])}</code> with "
                           f"{annotation['package_files']} files; template exports in "
                           f"<code>template_exports/</code>.</p>")
    else:
        annotation_html = f"<p>{esc(annotation.get('note', 'not run'))}</p>"
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
<h2>Admission and de-identification</h2>
{_intake_html(report.get("intake"))}
<h2>Series (loaded from the de-identified copy)</h2>
<table><tr><th>series</th><th>modality</th><th>shape i×j×k</th><th>spacing (mm)</th><th>origin (LPS, mm)</th>
<th>axes</th><th>files</th><th>problems</th></tr>{''.join(rows)}</table>
<h2>Annotation document and export package</h2>{annotation_html}
<h2>Checks</h2><table><tr><th></th><th>check</th><th>result</th></tr>{check_rows}</table>
<h2>Problems found while loading</h2>
<table><tr><th>severity</th><th>code</th><th>message</th><th>files</th></tr>{problem_rows}</table>
<p>Timings: {esc(timing)}.</p>
</body></html>
"""


def _intake_html(section: Any) -> str:
    if not section:
        return "<p>not run</p>"
    esc = html.escape
    leaks = ", ".join(f"{k} {v}" for k, v in section["leaks_by_category"].items()) or "none"
    return (f"<p>Admission profile <b>{esc(section['admission_profile'])}</b>: {esc(section['verdict'])} "
            f"({section['n_blocking']} blocking finding(s); <a href='{esc(section['reports']['admission'])}'>"
            f"admission report</a>). De-identification profile <b>{esc(section['deid_profile'])}</b>"
            f"{' with ' + esc(', '.join(section['options'])) if section['options'] else ''} "
            f"(key fingerprint {esc(section['key_fingerprint'])}): {section['files_written']} file(s), "
            f"case(s) {esc(', '.join(c['case_id'] for c in section['cases']))}; "
            f"{section['burned_in_annotation']} file(s) flagged for burned-in annotation. "
            f"Leak check: {section['n_leaks']} leak(s) ({esc(leaks)}); images identical: "
            f"{'yes' if section['images_identical'] else 'NO'}. The key and the pseudonym registry are in "
            "<code>private/</code> (owner-only).</p>")


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
        description="The main job: generate a sample case, check it for admission, de-identify it and verify "
                    "that no identifying value is left, then inspect and load every de-identified series, export "
                    "to NIfTI and read back, check geometry and ground truth, and write report.json and "
                    "report.html into OUT (a new folder). Exit 0 when every check passed, 1 otherwise.",
    )
    p.add_argument("--out", required=True, help="new (or empty) output folder")
    p.add_argument("--kind", default="ct-chest",
                   choices=("ct-chest", "mr-brain-mets", "pet-ct", "us-thyroid", "xray-ra"), help="sample kind")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(p)
    p.set_defaults(func=_cmd_demo)
