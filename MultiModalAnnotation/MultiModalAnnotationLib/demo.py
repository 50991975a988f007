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
nnU-Net and CSV formats (the CSVs read back to the same template); export the ground truth of the
primary series as an RT Structure Set onto its (de-identified) DICOM series, import it back and
check that every ROI comes back exactly (Dice 1.0), and import the structure set the sample ships
with (ct-chest, mr-brain-mets; de-identified with its images, so its references must still resolve)
against the same labels (R-5.7); quality control (QCMetrics):
a realistic second reader is made from the ground truth (the largest structure shifted by one
voxel, a lesion eroded, one lesion missed when there are three or more, one extra lesion) and
compared with it, writing ``qc/report.html`` (+ JSON, CSV), and the QC must find exactly the
planted disagreements; the case walks the workflow (two readers compared, review, QC, frozen as
release 1.0), every step in a hash-chained audit trail that is verified and shipped in a release
package; write ``report.json`` and a self-contained ``report.html`` linking the QC report.
The exit status is 0 when every check passed and 1 otherwise (the report says which).
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import numpy as np

from RTSSBridgeLib.cli import inspect_path
from RTSSBridgeLib.cliutil import EXIT_FAILED_CHECK, EXIT_OK, Progress, add_json_option, emit_json
from RTSSBridgeLib.fileio import write_json_atomic, write_text_atomic
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.uids import keyed_uid

from . import __version__

# pydicom and nibabel are imported inside the steps: ``mmanno`` starts without them.

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
    from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
    from RTSSBridgeLib.nifti import read_nifti, write_nifti
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
    images: Dict[str, Any] = {}
    for series in scan.series:
        volume = read_volume(series)
        record = recorded.get(series.series_uid)
        key = record["key"] if record else series.series_uid[-8:]
        label = f"{key} part {series.part}" if series.n_parts > 1 else key
        row = {"key": label, **series.summary()}
        series_rows.append(row)
        if series.n_parts == 1:
            images[key] = (volume.voxels, series.geometry)
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

    t = time.monotonic()
    fusion = fusion_step(out, images, Path(case.root), checks)
    timings["fusion_s"] = time.monotonic() - t

    t = time.monotonic()
    rtss = structure_set_round_trip(out, manifest, scan, checks, dicom_root, intake["key"])
    timings["rtss_s"] = time.monotonic() - t

    t = time.monotonic()
    qc_summary = None
    labelmaps = [e for e in manifest.get("ground_truth", []) if e.get("name") == "labels"
                 and e["path"].endswith((".nii", ".nii.gz"))]
    niftis = [e for e in manifest.get("ground_truth", []) if e["path"].endswith((".nii", ".nii.gz"))]
    if labelmaps:
        qc_summary, qc_checks = run_qc_step(out, out / "case" / labelmaps[0]["path"], labelmaps[0],
                                            images.get(labelmaps[0].get("series_key", "")), seed,
                                            f"{kind}-seed{seed}-second-reader")
        checks += qc_checks
    elif len(niftis) >= 2 and niftis[0].get("series_key") != niftis[1].get("series_key"):
        qc_summary, qc_checks = run_modality_qc_step(out, out / "case" / niftis[0]["path"],
                                                     out / "case" / niftis[1]["path"],
                                                     images.get(niftis[0].get("series_key", "")),
                                                     f"{kind}-seed{seed}-{niftis[0]['name']}-vs-{niftis[1]['name']}")
        checks += qc_checks
    timings["qc_s"] = time.monotonic() - t

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
        "rtss": rtss,
        "fusion": fusion,
        "problems": problems,
        "checks": checks,
        "qc": qc_summary,
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
    linking = linking_step(out, kind, document, masks, template, checks)
    if linking.get("document") is not None:
        document = linking.pop("document")
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
    if linking.get("links"):
        from .consistency import check_links
        from .links import report_links_of

        _checked, again = check_links(package.document, package.template, {k: v.voxels for k, v in
                                                                            package.masks.items()})
        kept = [r.state for r in again] == [item.consistency.state for item in report_links_of(document).links]
        checks.append(_check("link check on the export package gives the same states (mmanno link check)", kept,
                             ", ".join(f"{r.link_id} {r.state}" for r in again)))
    workflow = workflow_step(out, document, masks, template, checks)
    return {"template": f"{template.id} {template.version}", "task_id": document.task_id,
            "image": document.image.series_key, "annotations": len(document.annotations), "by_type": counts,
            "package": str(package_dir.relative_to(out)), "package_files": report.n_files, "exports": exports,
            "linking": linking, "workflow": workflow}


#: People of the demo's task (pseudonymous ids, as a task lists them).
DEMO_PEOPLE = {"annotator": ["A01", "A02"], "reviewer": ["R01"], "arbiter": ["J01"], "qc": ["Q01"],
               "administrator": ["ADM1"]}


def demo_task(document: Any) -> Any:
    """The task of the demo case: the document's objects, two readers, one reviewer, every role."""
    from .tasks import task_from_dict

    return task_from_dict(_demo_task_data(document))


def _demo_task_data(document: Any) -> Dict[str, Any]:
    from .schemas import schema_id

    return {
        "schema": schema_id("task"), "task_id": document.task_id, "version": "1.0",
        "goal": {"en": "Demo: ground truth of the sample case through the review workflow.",
                 "zh": "演示：样例病例的金标准经过审核流程。"},
        "usage": "model_validation",
        "data": [{"name": document.image.series_key or "image", "kind": "image", "modality": document.image.modality,
                  "role": "reference"}],
        "template": {"id": document.template_id, "version": document.template_version},
        "objects": [{"label_code": code, "annotation_types": ["mask"], "required": True, "multiple": True}
                    for code in sorted({a.label_code for a in document.annotations})],
        "outputs": [{"kind": "annotation_document", "format": "json"}],
        "qc": {"dice_threshold": 0.75, "fusion_deviation_mm": 3.0, "time_deviation_days": 90, "sampling_ratio": 1.0},
        "roles": [{"role": role, "scope": "all", "people": people} for role, people in DEMO_PEOPLE.items()],
        "review": {"high_risk": False, "readers": 2, "reviewers": 1, "score_difference": 1},
    }


def workflow_step(out: Path, document: Any, masks: Dict[str, np.ndarray], template: Any,
                  checks: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The demo case through the workflow (R-5.6, R-6.8 - R-6.10): created, admitted,
    de-identified, preprocessed, two readers, reader comparison, review, QC, frozen as release
    1.0 - every step in a hash-chained audit trail - then a release package with the trail."""
    from .package import export_package, verify_package
    from .provenance.audit import verify_trail
    from .provenance.case import Case

    folder = out / "workflow_case"
    case = Case.create(folder, "DEMO_CASE", demo_task(document), template, "ADM1",
                       reason="demo case from the de-identified sample")
    for target in ("admitted", "deidentified", "preprocessed", "annotating"):
        case.advance("ADM1", "administrator", target)
    for reader in DEMO_PEOPLE["annotator"]:
        case.save_version(reader, "annotator", document, masks)
    case.advance("A01", "annotator", "in_review")
    compared = case.compare("R01", consensus=())  # consensus proposals are for the arbiter: none needed here
    case.review("R01", {"case": "accept"})
    case.advance("R01", "reviewer", "qc")
    case.qc_result("Q01", True, {"readers_agree": not compared["details"]["disagreement"]})
    case.freeze("ADM1", "1.0", "demo", "ground truth of the sample case")
    trail = verify_trail(folder / "audit.jsonl")
    verified = case.verify()
    state = case.state()
    checks.append(_check("workflow: the case walked received -> frozen, every step in the audit trail",
                         state.state.value == "frozen" and trail.ok and trail.n_events == 13,
                         trail.line().replace(str(folder / "audit.jsonl"), "workflow_case/audit.jsonl"),
                         events=trail.n_events))
    checks.append(_check("workflow: frozen release 1.0 verifies (checksums, read-only, anchored in the trail)",
                         verified.ok, "; ".join(verified.problems + verified.releases.get("1.0", [])[:3]) or
                         "release files unchanged and read-only"))
    release_package = out / "release_package"
    export_package(release_package, document, template, masks=masks, audit=folder / "audit.jsonl")
    report = verify_package(release_package)
    checks.append(_check("release package ships the audit trail (listed in the manifest, chain verified)",
                         report.ok, "; ".join(report.lines()[:3]) or f"{trail.n_events} events shipped"))
    return {"case": state.case_id, "folder": str(folder.relative_to(out)), "state": state.state.value,
            "events": trail.n_events, "last_hash": trail.last_hash, "trail_intact": trail.ok,
            "release": "1.0", "release_package": str(release_package.relative_to(out)),
            "readers_agree": not compared["details"]["disagreement"],
            "steps": [f"{h['action']} {h['transition'] or ''}".strip() for h in case.history()]}


def linking_step(out: Path, kind: str, document: Any, masks: Dict[str, np.ndarray], template: Any,
                 checks: List[Dict[str, Any]]) -> Dict[str, Any]:
    """R-8.4.2 / R-8.4.3 on the ct-chest sample: a short bilingual report written from the ground
    truth (side and diameter of nodule 1) is linked to its mask; a second sentence names the wrong
    side on purpose. The consistency aids must pass the first and flag the second; the seed 001
    clinical table of the nodules is imported, bound to point annotations and exported byte for byte."""
    import csv
    import io

    from .consistency import check_links
    from .links import add_link, add_report, link_findings
    from .reports_text import Report
    from .seed_tables import CLINICAL, export_seed001_clinical, import_seed001_clinical
    from .structured import CaseKeys, ImageKey, builtin_field_definitions, read_table, write_table

    if kind != "ct-chest":
        return {"note": f"image-text linking is shown on the ct-chest sample, not {kind}"}
    nodules = json.loads((out / "case" / "ground_truth" / "nodules.json").read_text("utf-8"))["nodules"]
    first = next((n for n in nodules if f"NODULE_{int(n['id'][1:]):02d}" in masks), None)
    if first is None:
        return {"note": "no nodule of the sample lies on the image"}
    target = f"NODULE_{int(first['id'][1:]):02d}"
    side_zh, wrong_en = ("左", "right") if first["lung"] == "left" else ("右", "left")
    density = "实性" if first["density"] == "solid" else ""
    right_sentence = f"{side_zh}肺见一{density}结节，最大径约{first['diameter_mm']:.1f} mm。"
    wrong_sentence = f"Nodule of {first['diameter_mm']:.0f} mm in the {wrong_en} lung."
    text = f"影像所见：{right_sentence}{wrong_sentence}\n建议3个月后复查。"
    document = add_report(document, Report("RPT_CT_FINDINGS", text, title="CT chest report (synthetic)"))
    for sentence, semantic in ((right_sentence, "finding"), (wrong_sentence, "finding")):
        start = text.index(sentence)
        document, _ = add_link(document, "RPT_CT_FINDINGS", start, start + len(sentence), target, semantic,
                               actor="demo", time=document.metadata["timestamps"]["start"])
    document, results = check_links(document, template, masks)
    states = [r.state for r in results]
    checks.append(_check("consistency aids: the report sentence matching the ground truth is consistent, the "
                         "wrong-side sentence inconsistent (R-8.4.2.4)", states == ["consistent", "inconsistent"],
                         "; ".join(f"{r.link_id} {r.state}: {r.note}" for r in results)))
    findings = link_findings(document)
    checks.append(_check("an inconsistent link raises a QC finding", [f["rule"] for f in findings]
                         == ["TEXT_LINK_CONSISTENCY"], "; ".join(f["message"] for f in findings)[:300]))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["Order", "分类", "病理分型", "ID", "X", "Y", "Z", "TNM分期", "临床分期"])
    inside = [n for n in nodules if 1 <= n["z"] <= document.image.geometry.shape[2]]
    for n, nodule in enumerate(inside, start=1):
        writer.writerow([n, "恶性" if nodule["classification"] == "malignant" else "良性", nodule["pathology_type_zh"],
                         "CASE0001", nodule["x"], nodule["y"], nodule["z"], nodule["tnm_text"] or "",
                         nodule["clinical_stage"] or ""])
    tables = out / "structured"
    tables.mkdir(parents=True, exist_ok=True)
    (tables / "clinical.csv").write_bytes(buffer.getvalue().encode("utf-8"))
    table = read_table(str(tables / "clinical.csv"), builtin_field_definitions(CLINICAL))
    document = import_seed001_clinical(document, table, CaseKeys("CASE0001", (ImageKey(document.image.uid),)),
                                       template)
    write_table(str(tables / "clinical-exported.csv"), export_seed001_clinical(document))
    same = (tables / "clinical-exported.csv").read_bytes() == (tables / "clinical.csv").read_bytes()
    checks.append(_check("seed 001 clinical table -> point annotations (x, y, z-1) -> table, byte for byte (R-001)",
                         same and len(table.records) == len(inside), f"{len(inside)} tumour row(s)"))
    return {"document": document, "report": "RPT_CT_FINDINGS", "target": target,
            "links": [r.to_dict() for r in results], "clinical_table_rows": len(inside),
            "tables": [str((tables / "clinical.csv").relative_to(out)),
                       str((tables / "clinical-exported.csv").relative_to(out))]}


def fusion_step(out: Path, images: Dict[str, Any], case_root: Path, checks: List[Dict[str, Any]]
                ) -> Optional[Dict[str, Any]]:
    """Registration-checked fusion (R-8.4.1) on the de-identified images: mr-brain-mets registers
    T2W onto T1W+C (rigid, TRE on the generator's landmarks, transform file written); pet-ct checks
    the PET-CT body outlines (8.4.1.3). None for single-series kinds. About 6 s and 1 s."""
    from .fusion.accuracy import Landmarks, body_alignment, target_registration_error
    from .fusion.guard import FusionGuard, RegistrationState
    from .fusion.images import FusionImage
    from .fusion.registration import register, write_transform

    if "T1W_C" in images and "T2W" in images:
        fixed = FusionImage(images["T1W_C"][0], images["T1W_C"][1], modality="MR")
        moving = FusionImage(images["T2W"][0], images["T2W"][1], modality="MR")
        result = register(fixed, moving)
        path = write_transform(result.transform, out / "fusion" / "T2W_to_T1W_C.h5")
        truth = json.loads((case_root / "ground_truth" / "landmarks.json").read_text(encoding="utf-8"))
        names = tuple(p["name"] for p in truth["pairs"])
        tre = target_registration_error(result.transform,
                                        Landmarks(names, np.array([p["fixed_lps_mm"] for p in truth["pairs"]])),
                                        Landmarks(names, np.array([p["moving_lps_mm"] for p in truth["pairs"]])))
        guard = FusionGuard(reference="T1W_C", moving=["T2W"])
        refused = guard.decide("T2W")
        guard.record(RegistrationState("T2W", transform_file=str(path.relative_to(out)), tre_mean_mm=tre.mean_mm))
        allowed = guard.decide("T2W")
        checks.append(_check("fusion: T2W registered onto T1W+C recovers the head motion (landmark TRE < 1 mm)",
                             tre.mean_mm < 1.0, f"TRE mean {tre.mean_mm:.3f} mm, max {tre.max_mm:.3f} mm over "
                             f"{len(names)} landmarks; metric {result.metric_before:.3f} -> {result.metric_after:.3f}; "
                             f"{result.elapsed_s:.1f} s", tre_mean_mm=tre.mean_mm, tre_max_mm=tre.max_mm))
        checks.append(_check("fusion guard: T2W refused before registration, allowed after (8.4.1.4)",
                             not refused.allowed and allowed.allowed, f"before: {refused.reason}; after: "
                             f"{allowed.reason}"))
        return {"kind": "registration", "fixed": "T1W_C", "moving": "T2W", "mode": result.mode,
                "transform_file": str(path.relative_to(out)), "tre_mean_mm": tre.mean_mm, "tre_max_mm": tre.max_mm,
                "metric_before": result.metric_before, "metric_after": result.metric_after,
                "elapsed_s": result.elapsed_s, "guard": allowed.to_dict()}
    if "CT" in images and "PT" in images:
        check = body_alignment(FusionImage(images["CT"][0], images["CT"][1], modality="CT"),
                               FusionImage(images["PT"][0], images["PT"][1], modality="PT"))
        checks.append(_check("fusion: PET-CT body outlines agree (8.4.1.3)", check.passed, check.reason(),
                             residual_translation_mm=check.translation_mm, residual_rotation_deg=check.rotation_deg))
        return {"kind": "pet_ct_alignment", **check.to_dict()}
    return None


def second_reader(labels: np.ndarray, entries: List[Dict[str, Any]], seed: int) -> tuple[np.ndarray, Dict[str, Any]]:
    """A realistic second reading of a ground-truth labelmap and what was planted in it: the largest
    structure shifted by one voxel along i, the largest lesion eroded by two voxels, the smallest
    lesion missed (when there are three or more; its voxels go to the structure around it) and one
    extra lesion inside a structure."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    names = {int(e["value"]): str(e.get("code") or e.get("name")) for e in entries}
    counts = {v: int(np.count_nonzero(labels == v)) for v in names}
    present = [v for v in names if counts[v] > 0]
    organ = max(present, key=lambda v: counts[v])
    lesions = sorted((v for v in present if v >= 10), key=lambda v: counts[v])
    test = labels.copy()
    organ_mask = labels == organ
    test[organ_mask] = 0
    shifted = np.roll(organ_mask, 1, axis=2)
    test[shifted & (test == 0)] = organ
    planted: Dict[str, Any] = {"shifted": names[organ], "eroded": None, "missed": None, "extra_value": None}
    def around(mask: np.ndarray) -> int:
        ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
        values = [v for v in labels[ring].tolist() if v and v not in lesions]
        return max(set(values), key=values.count) if values else 0

    if lesions:
        big = lesions[-1]
        mask = labels == big
        test[mask & ~ndimage.binary_erosion(mask, iterations=2)] = around(mask)
        planted["eroded"] = names[big]
    if len(lesions) >= 3:
        small = lesions[0]
        test[test == small] = around(labels == small)
        planted["missed"] = names[small]
    # an extra lesion: a small ball inside a structure, away from the reference lesions
    organ_mask = labels == organ
    inside = np.argwhere(ndimage.binary_erosion(organ_mask, iterations=4) & ~ndimage.binary_dilation(
        np.isin(labels, lesions) if lesions else np.zeros_like(organ_mask), iterations=6))
    if inside.size:
        centre = inside[rng.integers(len(inside))]
        k, j, i = np.ogrid[: labels.shape[0], : labels.shape[1], : labels.shape[2]]
        ball = (k - centre[0]) ** 2 + ((j - centre[1]) / 1.5) ** 2 + ((i - centre[2]) / 1.5) ** 2 <= 4
        extra = max(names) + 1
        test[ball] = extra
        planted["extra_value"] = extra
    return test, planted


def run_qc_step(out: Path, labels_path: Path, entry: Dict[str, Any], image: Any, seed: int,
                case_id: str = "second-reader") -> tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Compare the ground truth with a planted second reading and write ``qc/`` (QCMetrics)."""
    from QCMetricsLib.compare import compare_volumes
    from QCMetricsLib.config import QCConfig
    from QCMetricsLib.readers import read_labeled_volume
    from QCMetricsLib.report import write_case_outputs
    from RTSSBridgeLib.nifti import write_nifti

    reference = read_labeled_volume(str(labels_path))
    if image is not None and image[1].isclose(reference.geometry, NIFTI1_TOLERANCE_MM):
        reference.image = image[0]
    if reference.labelmap is None:
        raise ValueError(f"{labels_path} was not read as a labelmap")
    test_labels, planted = second_reader(reference.labelmap, entry.get("labels", []), seed)
    qc_dir = out / "qc"
    test_path = qc_dir / "second_reader.nii.gz"
    write_nifti(test_path, test_labels, reference.geometry, label_map=True, description="second reader")
    names = {e.value: e.name for e in reference.labels}
    if planted["extra_value"] is not None:
        names[planted["extra_value"]] = "extra lesion"
    table = "".join(f"{v} {n.replace(' ', '_')} 128 128 128 255\n" for v, n in sorted(names.items()))
    write_text_atomic(qc_dir / "second_reader.ctbl", table)
    test = read_labeled_volume(str(test_path))
    comparison = compare_volumes(reference, test, QCConfig(), case_id=case_id)
    write_case_outputs(comparison, str(qc_dir / "qc.json"), str(qc_dir / "report.html"), str(qc_dir / "qc.csv"))
    result = comparison.result
    by_label = {e["label"]: e for e in result["labels"]}
    flagged = set(result["verdict"].get("flagged_labels", []))
    checks = []
    shifted = by_label.get(planted["shifted"])
    spacing_i = reference.geometry.spacing_mm[0]
    checks.append(_check("QC: the structure shifted by one voxel keeps Dice above 0.9 with HD95 within two voxels",
                         shifted is not None and shifted["dice"] is not None and 0.9 < shifted["dice"] < 1.0
                         and shifted["hausdorff95_mm"] is not None and shifted["hausdorff95_mm"] <= 2 * spacing_i,
                         f"{planted['shifted']}: Dice {shifted['dice'] if shifted else None}, HD95 "
                         f"{shifted['hausdorff95_mm'] if shifted else None} mm (voxel {spacing_i:.4g} mm)"))
    if planted["eroded"]:
        checks.append(_check("QC: the eroded lesion is flagged for special review", planted["eroded"] in flagged,
                             f"{planted['eroded']}: Dice {by_label[planted['eroded']]['dice']}"))
    det = result["detection"]
    if planted["extra_value"] is not None:
        checks.append(_check("QC: the extra lesion is an unmatched test object",
                             det.get("false_positive_objects", 0) >= 1,
                             f"{det.get('false_positive_objects')} extra object(s), {det.get('missed')} missed"))
    if planted["missed"]:
        checks.append(_check("QC: the missed lesion is a missed reference object", det.get("missed", 0) >= 1,
                             f"{planted['missed']} missing; recall {det.get('detection_recall')}"))
    checks.append(_check("QC: the verdict is not 'fit for intended use'", result["verdict"]["status"] != "fit",
                         f"verdict: {result['verdict']['title']}"))
    summary = {"report": "qc/report.html", "json": "qc/qc.json", "csv": "qc/qc.csv", "planted": planted,
               "verdict": result["verdict"],
               "labels": [{k: e[k] for k in ("label", "dice", "hausdorff95_mm", "mean_surface_distance_mm",
                                             "special_review")} for e in result["labels"]],
               "detection": {k: det.get(k) for k in ("n_reference_objects", "n_test_objects", "matched", "missed",
                                                     "false_positive_objects", "detection_recall",
                                                     "detection_precision")}}
    return summary, checks


def run_modality_qc_step(out: Path, reference_path: Path, test_path: Path, image: Any,
                         case_id: str) -> tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """R-10.2 between modalities: the same lesions annotated on two grids (CT and PET) compared in
    physical space after nearest-neighbour resampling onto the reference grid."""
    from QCMetricsLib.compare import compare_volumes
    from QCMetricsLib.config import QCConfig
    from QCMetricsLib.readers import read_labeled_volume
    from QCMetricsLib.report import write_case_outputs

    reference = read_labeled_volume(str(reference_path))
    if image is not None and image[1].isclose(reference.geometry, NIFTI1_TOLERANCE_MM):
        reference.image = image[0]
    test = read_labeled_volume(str(test_path))
    comparison = compare_volumes(reference, test, QCConfig(comparison="modalities"), case_id=case_id)
    qc_dir = out / "qc"
    write_case_outputs(comparison, str(qc_dir / "qc.json"), str(qc_dir / "report.html"), str(qc_dir / "qc.csv"))
    result = comparison.result
    det = result["detection"]
    checks = [
        _check("QC: the test on the other grid was resampled onto the reference grid (stated in the report)",
               result["test"]["resampled"] and result["resampling"] != "none", result["resampling"]),
        _check("QC: every lesion of one modality is found in the other", det.get("missed") == 0
               and det.get("false_positive_objects") == 0 and det.get("n_reference_objects", 0) > 0,
               f"{det.get('matched')} of {det.get('n_reference_objects')} matched"),
    ]
    summary = {"report": "qc/report.html", "json": "qc/qc.json", "csv": "qc/qc.csv",
               "planted": {"comparison": "between modalities", "reference": reference_path.name,
                           "test": test_path.name},
               "verdict": result["verdict"],
               "labels": [{k: e[k] for k in ("label", "dice", "hausdorff95_mm", "mean_surface_distance_mm",
                                             "special_review")} for e in result["labels"]],
               "detection": {k: det.get(k) for k in ("n_reference_objects", "n_test_objects", "matched", "missed",
                                                     "false_positive_objects", "detection_recall",
                                                     "detection_precision")}}
    return summary, checks


def structure_set_round_trip(out: Path, manifest: Dict[str, Any], scan: Any, checks: List[Dict[str, Any]],
                             dicom_root: Path, key: bytes) -> Optional[Dict[str, Any]]:
    """Ground truth -> RTSS on the primary DICOM series -> masks again: Dice 1.0 per ROI (R-5.7).

    Works on the de-identified copy: the primary series is found by its pseudonymised UID, and the
    structure set the sample ships with is imported from the de-identified folder, so its references
    must have been remapped consistently with the images (R-7.3). Returns the report section (None
    for kinds without a 3-D labelled series).
    """
    from RTSSBridgeLib.nifti import read_nifti
    from RTSSBridgeLib.problems import ProblemCode
    from RTSSBridgeLib.roi import RoiMask, dice
    from RTSSBridgeLib.rtss_export import ExportOptions, export_rtss
    from RTSSBridgeLib.rtss_import import import_rtss
    from RTSSBridgeLib.structures import ReferenceGrid, Roi

    primary = next((s for s in manifest["series"] if s["role"] == "primary"), None)
    entry = next((g for g in manifest.get("ground_truth", []) if g["format"] == "nifti" and primary is not None
                  and g.get("series_key") == primary["key"] and g.get("labels")), None)
    if primary is None or entry is None or not primary.get("frame_of_reference_uid"):
        return None
    series_uid = keyed_uid(key, primary["series_instance_uid"])
    series = next((s for s in scan.series if s.series_uid == series_uid), None)
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
    back = import_rtss(path, dicom_root, series_uid=series.series_uid)
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
    structure_files = [p.files[0] for p in scan.problems if p.code == ProblemCode.NON_IMAGE_OBJECT
                       and "RTSTRUCT" in p.message and p.files]
    if shipped is not None:
        ok = len(structure_files) == 1
        scores: List[Any] = []
        warnings: List[str] = []
        if ok:
            result = import_rtss(Path(structure_files[0]), dicom_root)
            scores = [(spec["roi_name"], dice(RoiMask.from_full(labels == spec["label_value"]), roi.mask)
                       if roi.mask is not None else 0.0) for spec, roi in zip(shipped["rois"], result.rois)]
            warnings = [p.line() for p in result.all_problems()]
            ok = len(scores) == len(shipped["rois"]) and all(score == 1.0 for _, score in scores) and not warnings
        checks.append(_check(f"the sample's de-identified RT Structure Set ({len(scores)} ROIs) resolves to its images "
                             "and matches the ground truth", ok,
                             ", ".join(f"{name} Dice {score:.6f}" for name, score in scores)
                             or f"{len(structure_files)} structure set(s) in the de-identified copy"))
        section["shipped"] = {"file": str(Path(structure_files[0]).relative_to(out)) if structure_files else None,
                              "rois": [{"roi": name, "dice": score} for name, score in scores],
                              "warnings": warnings}
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
    annotation = report.get("annotation") or {}
    if annotation.get("template"):
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(annotation["by_type"].items()))
        annotation_html = (f"<p>Template <b>{esc(annotation['template'])}</b>, task {esc(annotation['task_id'])}: "
                           f"{annotation['annotations']} annotations ({esc(kinds)}) on the "
                           f"{esc(annotation['image'])} grid. Package <code>{esc(annotation['package'])}</code> with "
                           f"{annotation['package_files']} files; template exports in "
                           f"<code>template_exports/</code>.</p>")
        workflow = annotation.get("workflow")
        if workflow:
            intact = "intact" if workflow["trail_intact"] else "BROKEN"
            annotation_html += (
                f"<h3>Workflow and audit trail</h3><p>Case {esc(workflow['case'])} walked to "
                f"<b>{esc(workflow['state'])}</b> (release {esc(workflow['release'])}); audit trail "
                f"<code>{esc(workflow['folder'])}/audit.jsonl</code> verified <b>{intact}</b>: "
                f"{workflow['events']} hash-chained events, last hash <code>{esc(str(workflow['last_hash'])[:16])}"
                f"</code>&hellip;. Steps: {esc(', '.join(workflow['steps']))}. Release package "
                f"<code>{esc(workflow['release_package'])}</code> ships the trail.</p>")
    else:
        annotation_html = f"<p>{esc(annotation.get('note', 'not run'))}</p>"
    linking = annotation.get("linking") or {}
    if linking.get("links"):
        link_rows = "".join(
            f"<tr class={'ok' if r['state'] == 'consistent' else 'bad'}><td>{esc(r['link'])}</td>"
            f"<td>{esc(r['quote'])}</td><td>{esc(r['target'])}</td><td>{esc(r['state'])}</td>"
            f"<td>{esc(r['note'])}</td></tr>" for r in linking["links"])
        annotation_html += (f"<h3>Image-text links (R-8.4.2)</h3><p>Report {esc(linking['report'])} linked to "
                            f"{esc(linking['target'])}; the consistency aids' proposals (a person confirms them):</p>"
                            f"<table><tr><th>link</th><th>text</th><th>region</th><th>state</th><th>reason</th></tr>"
                            f"{link_rows}</table><p>Seed 001 clinical table: {linking['clinical_table_rows']} tumour "
                            f"row(s) imported as point annotations and exported back "
                            f"(<code>{esc(linking['tables'][1])}</code>).</p>")
    elif linking.get("note"):
        annotation_html += f"<p>{esc(linking['note'])}</p>"

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
    qc_html = "<p>no ground-truth labelmap: QC not run</p>"
    qc = report.get("qc")
    if qc:
        label_rows = "".join(
            f"<tr class={'bad' if e['special_review'] else 'ok'}><td>{esc(e['label'])}</td>"
            f"<td>{'—' if e['dice'] is None else format(e['dice'], '.4f')}</td>"
            f"<td>{'—' if e['hausdorff95_mm'] is None else format(e['hausdorff95_mm'], '.2f')}</td>"
            f"<td>{'special review' if e['special_review'] else ''}</td></tr>" for e in qc["labels"])
        d = qc["detection"]
        qc_html = (f"<p>Compared: {esc(json.dumps(qc['planted']))}. "
                   f"Verdict: <b>{esc(qc['verdict']['title'])}</b>. Objects: {d['n_reference_objects']} reference, "
                   f"{d['n_test_objects']} test, {d['matched']} matched, {d['missed']} missed, "
                   f"{d['false_positive_objects']} extra. "
                   f'<a href="{esc(qc["report"])}">Open the QC report</a> (also {esc(qc["json"])}, '
                   f"{esc(qc['csv'])}).</p><table><tr><th>label</th><th>Dice</th><th>HD95 (mm)</th><th></th></tr>"
                   f"{label_rows}</table>")
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
{rtss_html}
<h2>Fusion (R-8.4.1)</h2>{_fusion_html(report.get("fusion"))}
<h2>Checks</h2><table><tr><th></th><th>check</th><th>result</th></tr>{check_rows}</table>
<h2>Quality control (QCMetrics)</h2>
{qc_html}
<h2>Problems found while loading</h2>
<table><tr><th>severity</th><th>code</th><th>message</th><th>files</th></tr>{problem_rows}</table>
<p>Timings: {esc(timing)}.</p>
</body></html>
"""


def _fusion_html(section: Any) -> str:
    esc = html.escape
    if not section:
        return "<p>Not applicable: one imaging series.</p>"
    if section["kind"] == "registration":
        return (f"<p>{esc(section['moving'])} registered onto {esc(section['fixed'])} ({esc(section['mode'])}, "
                f"SimpleITK Mattes MI) in {section['elapsed_s']:.1f} s: landmark TRE mean "
                f"{section['tre_mean_mm']:.3f} mm, max {section['tre_max_mm']:.3f} mm; transform "
                f"{esc(section['transform_file'])}. Guard: {esc(section['guard']['reason'])}.</p>")
    return f"<p>PET-CT body-outline check: {esc(section['reason'])}.</p>"


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
                    "to NIfTI and read back, check geometry and ground truth, build and verify the annotation "
                    "package, round-trip the ground truth through an RT Structure Set (Dice 1.0 per ROI), run QC "
                    "against a simulated second reader, and write report.json and report.html into OUT (a new "
                    "folder). Exit 0 when every check passed, 1 otherwise.",
    )
    p.add_argument("--out", required=True, help="new (or empty) output folder")
    p.add_argument("--kind", default="ct-chest",
                   choices=("ct-chest", "mr-brain-mets", "pet-ct", "us-thyroid", "xray-ra"), help="sample kind")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(p)
    p.set_defaults(func=_cmd_demo)
