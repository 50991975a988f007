"""Case comparison, readers, label matching, resampling, detection, rules, verdict, reports and the
``qc compare`` command (R-9.1, R-9.1.2, R-9.2, R-10.2, R-10.2.3)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

from QCMetricsLib.compare import compare_volumes, labeled_volume_from_arrays, match_labels
from QCMetricsLib.config import QCConfig, config_from_dict, load_config
from QCMetricsLib.detection import DetectionOptions, detect_objects
from QCMetricsLib.readers import LabeledVolume, read_labeled_volume
from QCMetricsLib.report import case_html, png_bytes, write_case_outputs
from QCMetricsLib.resample import resample_array
from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.labels import LabelInfo, LabelSet, NameRule
from RTSSBridgeLib.nifti import write_nifti

from .conftest import require_tool

OUTPUT = Path(__file__).resolve().parent / "output"


def grid() -> ImageGeometry:
    return ImageGeometry((48, 40, 30), (0.8, 0.8, 1.5), (-20.0, 10.0, 5.0))


def two_labelmaps() -> Tuple[np.ndarray, np.ndarray]:
    ref = np.zeros(grid().array_shape, np.uint8)
    test = np.zeros_like(ref)
    ref[5:25, 8:32, 8:40] = 1  # organ
    test[6:25, 8:32, 9:41] = 1
    ref[10:13, 12:15, 12:15] = 11  # lesion inside the organ
    test[10:13, 12:15, 13:16] = 11
    ref[15:17, 20:22, 30:32] = 12  # lesion the test misses
    test[20:22, 25:28, 20:23] = 13  # lesion only in the test
    return ref, test


def write_case(folder: Path, ref: np.ndarray, test: np.ndarray, names: Dict[int, str],
               geometry: ImageGeometry | None = None) -> Tuple[Path, Path]:
    g = geometry or grid()
    folder.mkdir(parents=True, exist_ok=True)
    r, t = folder / "ref.nii.gz", folder / "test.nii.gz"
    write_nifti(r, ref, g, label_map=True)
    write_nifti(t, test, g, label_map=True)
    table = "".join(f"{v} {n} 200 0 0 255\n" for v, n in names.items())
    (folder / "ref.ctbl").write_text(table, encoding="utf-8")
    (folder / "test.ctbl").write_text(table, encoding="utf-8")
    return r, t


NAMES = {1: "liver", 11: "lesion_a", 12: "lesion_b", 13: "lesion_c"}


# --------------------------------------------------------------------------- comparison
def test_compare_labelmaps_gives_the_issue_json_shape_and_verdict(tmp_path: Path) -> None:
    """R-10.2: per label the issue's keys; missing and extra lesions flagged; detection counts the
    objects; the verdict lists its reasons (R-10.2.3); the JSON validates against qc-case v1."""
    ref, test = two_labelmaps()
    r = labeled_volume_from_arrays(ref, grid(), NAMES)
    t = labeled_volume_from_arrays(test, grid(), NAMES)
    c = compare_volumes(r, t, QCConfig(), case_id="case-1")
    result = c.result
    labels = {e["label"]: e for e in result["labels"]}
    required = {"label", "dice", "iou", "conformity", "hausdorff_mm", "hausdorff95_mm", "mean_surface_distance_mm",
                "nsd", "volume_ref_ml", "volume_test_ml", "tp", "fp", "fn", "special_review"}
    for entry in labels.values():
        assert required <= set(entry)
    liver = labels["liver"]
    r1, t1 = ref == 1, test == 1
    assert liver["dice"] == pytest.approx(2 * np.count_nonzero(r1 & t1) / (r1.sum() + t1.sum()), abs=1e-12)
    assert liver["volume_ref_ml"] == pytest.approx(r1.sum() * 0.8 * 0.8 * 1.5 / 1000, rel=1e-12)
    assert not liver["special_review"] and liver["matched_by"] == "value"
    assert labels["lesion_b"]["special_review"] and labels["lesion_b"]["review_reasons"] == ["missing in the test"]
    assert labels["lesion_b"]["hausdorff_mm"] is None and "test mask empty" in labels["lesion_b"]["reasons"][
        "hausdorff_mm"]
    assert labels["lesion_c"]["matched_by"] is None
    det = result["detection"]
    assert det["labels"] == ["lesion_a", "lesion_b", "lesion_c"]
    assert (det["n_reference_objects"], det["n_test_objects"], det["matched"]) == (2, 2, 1)
    assert det["detection_recall"] == 0.5 and det["detection_precision"] == 0.5
    assert result["verdict"]["status"] == "rework"
    assert any("lesion_b" in reason for reason in result["verdict"]["reasons"])
    assert {f["rule"] for f in result["rules"]} >= {"MAPPING_COMPLETE"}
    write_case_outputs(c, str(tmp_path / "qc.json"), str(tmp_path / "qc.html"), str(tmp_path / "qc.csv"))
    back = json.loads((tmp_path / "qc.json").read_text())
    assert back["labels"][0]["label"] == "liver"
    rows = (tmp_path / "qc.csv").read_text().splitlines()
    assert rows[0].startswith("case_id,label,code") and len(rows) == 1 + len(labels)


def test_same_masks_are_fit_for_intended_use() -> None:
    ref, _ = two_labelmaps()
    v = labeled_volume_from_arrays(ref, grid(), NAMES)
    result = compare_volumes(v, labeled_volume_from_arrays(ref.copy(), grid(), NAMES)).result
    assert result["verdict"]["status"] == "fit"
    assert all(e["dice"] == 1.0 and e["hausdorff_mm"] == 0.0 for e in result["labels"])


def test_label_matching_order_code_then_value_then_name() -> None:
    """Template code first (a renamed ROI still matches), then label value, then ROI name."""
    g = grid()
    labels = LabelSet.from_labels([LabelInfo("LIVER", "liver", 1), LabelInfo("LESION", "lesion", 2)],
                                  name_rules=[NameRule("*tumo*r*", "LESION", "glob")])
    a = LabeledVolume("a", g, [], labelmap=np.zeros(g.array_shape, np.uint8))
    from QCMetricsLib.readers import LabelEntry

    a.labels = [LabelEntry(1, "Liver"), LabelEntry(5, "big tumour"), LabelEntry(7, "spleen")]
    b = LabeledVolume("b", g, [], labelmap=np.zeros(g.array_shape, np.uint8), values_are_codes=False)
    b.labels = [LabelEntry(2, "LIVER"), LabelEntry(3, "lesion"), LabelEntry(7, "Spleen ")]
    pairs = {(p.ref.value if p.ref else None, p.test.value if p.test else None): p.matched_by
             for p in match_labels(a, b, labels)}
    assert pairs == {(1, 2): "code", (5, 3): "code", (7, 7): "name"}
    c = LabeledVolume("c", g, [LabelEntry(7, "kidney")], labelmap=np.zeros(g.array_shape, np.uint8))
    d = LabeledVolume("d", g, [LabelEntry(7, "renal")], labelmap=np.zeros(g.array_shape, np.uint8))
    assert [p.matched_by for p in match_labels(c, d)] == ["value"]


def test_masks_on_different_grids_are_compared_after_nearest_neighbour_resampling() -> None:
    """R-10.2 between modalities: a test on an oblique, coarser grid is resampled onto the reference
    grid in physical space; the report says so. A box written on both grids from the same
    physical region agrees within the voxel size."""
    ref_g = ImageGeometry((40, 40, 30), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    origin = np.array([20.0, 20.0, 15.0]) - rotation @ (1.5 * np.array([14.5, 14.5, 9.5]))  # centred on the ball
    test_g = ImageGeometry((30, 30, 20), (1.5, 1.5, 1.5), tuple(origin), tuple(map(tuple, rotation)))

    def ball(g: ImageGeometry) -> np.ndarray:
        k, j, i = np.indices(g.array_shape)
        lps = g.ijk_to_lps(np.stack([i, j, k], axis=-1).reshape(-1, 3)).reshape(*g.array_shape, 3)
        return (np.linalg.norm(lps - np.array([20.0, 20.0, 15.0]), axis=-1) <= 9.0).astype(np.uint8)

    ref = labeled_volume_from_arrays(ball(ref_g), ref_g, {1: "ball"})
    test = labeled_volume_from_arrays(ball(test_g), test_g, {1: "ball"})
    result = compare_volumes(ref, test).result
    assert result["test"]["resampled"] and result["resampling"].startswith("nearest neighbour")
    assert any(f["rule"] == "SAME_GRID" for f in result["rules"])
    (ball_result,) = result["labels"]
    assert ball_result["dice"] > 0.8
    assert ball_result["hausdorff_mm"] <= math.sqrt(3) * 1.5


def test_integer_shift_resampling_is_exact() -> None:
    """The index map goes through ImageGeometry: a grid shifted by whole voxels moves labels by
    exactly that many voxels."""
    a = ImageGeometry((10, 8, 6), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    b = ImageGeometry((10, 8, 6), (1.0, 2.0, 3.0), (2.0, 4.0, 0.0))  # 2 voxels in i, 2 in j
    data = np.zeros(a.array_shape, np.uint8)
    data[2, 3, 4] = 7
    out = resample_array(data, a, b)
    assert out[2, 1, 2] == 7 and int(out.sum()) == 7


def test_detection_of_many_small_lesions() -> None:
    """Brain metastases: 40 small spheres, the test misses 3, adds 2 and moves the others by less
    than a voxel; recall 37/40, precision 37/39, every pair's Dice and distance computed; the
    centre criterion gives the same matching."""
    rng = np.random.default_rng(5)
    shape = (60, 120, 120)
    ref = np.zeros(shape, bool)
    test = np.zeros(shape, bool)
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centres = []
    while len(centres) < 42:
        c = rng.uniform([6, 10, 10], [54, 110, 110])
        if all(np.linalg.norm(c - o) > 14 for o in centres):
            centres.append(c)
    for n, c in enumerate(centres):
        r = rng.uniform(1.5, 3.5)
        if n < 40:
            ref |= (k - c[0]) ** 2 + (j - c[1]) ** 2 + (i - c[2]) ** 2 <= r * r
        if n >= 3:
            d = c + rng.uniform(-0.4, 0.4, 3)
            test |= (k - d[0]) ** 2 + (j - d[1]) ** 2 + (i - d[2]) ** 2 <= r * r
    overlap = detect_objects(ref, test, (0.9, 0.9, 1.0))
    assert (overlap.n_ref, overlap.n_test, overlap.matched) == (40, 39, 37)
    assert len(overlap.missed) == 3 and len(overlap.false_positives) == 2
    matched = [o for o in overlap.reference if o.match is not None]
    assert all(o.stats["dice"] > 0.3 and o.stats["hausdorff_mm"] is not None for o in matched)
    centre = detect_objects(ref, test, (0.9, 0.9, 1.0), options=DetectionOptions("centre", max_centre_distance_mm=3.0))
    assert centre.matched == 37
    with pytest.raises(ValueError, match="criterion"):
        DetectionOptions("nearest")


def test_containment_rule_finds_a_lesion_outside_its_organ() -> None:
    """R-9.2 plausibility: a lesion lying outside the organ that must contain it is an error."""
    ref, test = two_labelmaps()
    test[test == 13] = 0
    test[2:4, 2:4, 2:4] = 13  # outside the organ
    cfg = config_from_dict({"containment": [{"child": "lesion_*", "parent": "liver"}]})
    result = compare_volumes(labeled_volume_from_arrays(ref, grid(), NAMES),
                             labeled_volume_from_arrays(test, grid(), NAMES), cfg).result
    findings = [f for f in result["rules"] if f["rule"] == "CONTAINMENT"]
    assert [(f["label"], f["severity"]) for f in findings] == [("lesion_c", "error")]
    assert "100.0% of its voxels lie outside liver" in findings[0]["message"]


def test_document_rules_traceability_attributes_codes_and_coordinates() -> None:
    """R-9.2: an annotation document lacking annotator and a required attribute, using an unknown
    code and a box outside the image, gives one finding each."""
    from QCMetricsLib.rules import check_document

    doc = {"image": {"shape": [48, 40, 30]},
           "annotations": [{"id": "a1", "label_code": "NODULE", "type": "bbox",
                            "data": {"bbox": [1, 2, 3, 60, 20, 10], "attributes": {"malignancy": "high"}}},
                           {"id": "a2", "label_code": "UNKNOWN", "type": "point", "data": {"point": [3, 4, 5]}}],
           "metadata": {"version": "1", "timestamps": {"start": "x"}, "software": {"name": "s"}}}
    findings = check_document(doc, ["NODULE"], {"NODULE": ["malignancy", "pathology"]},
                              ("annotator", "version", "timestamps", "software"))
    rules = sorted((f.rule, f.severity) for f in findings)
    assert rules == [("CODE_IN_TEMPLATE", "error"), ("INSIDE_IMAGE", "error"), ("REQUIRED_ATTRIBUTES", "error"),
                     ("TRACEABILITY", "warning")]


def test_ai_versus_human_deviation(tmp_path: Path) -> None:
    """R-9.1.2 note 1: boundary shift, missed-region and over-annotation rates, region mismatch."""
    ref, test = two_labelmaps()
    cfg = QCConfig(comparison="ai-vs-human")
    result = compare_volumes(labeled_volume_from_arrays(ref, grid(), NAMES),
                             labeled_volume_from_arrays(test, grid(), NAMES), cfg).result
    dev = result["deviation"]
    liver = next(d for d in dev["labels"] if d["label"] == "liver")
    r1, t1 = ref == 1, test == 1
    assert liver["missed_region_rate"] == pytest.approx(np.count_nonzero(r1 & ~t1) / r1.sum(), abs=1e-12)
    assert liver["over_annotation_rate"] == pytest.approx(np.count_nonzero(t1 & ~r1) / t1.sum(), abs=1e-12)
    assert liver["boundary_shift_mm"] > 0 and liver["regions_matched"] == 1
    assert dev["regions_unmatched"] == 2  # lesion_b missed by the AI, lesion_c removed by the human


def test_domain_changes_specificity_and_is_printed() -> None:
    """SPEC Decisions: specificity, accuracy and kappa depend on the counted negatives; the domain
    is a parameter and goes with the numbers."""
    ref, test = two_labelmaps()
    r = labeled_volume_from_arrays(ref, grid(), NAMES)
    t = labeled_volume_from_arrays(test, grid(), NAMES)
    image = {e["label"]: e for e in compare_volumes(r, t, QCConfig(domain="image")).result["labels"]}
    bbox = {e["label"]: e for e in compare_volumes(r, t, QCConfig(domain="bbox")).result["labels"]}
    body = np.zeros(grid().array_shape, bool)
    body[2:28, 4:36, 4:44] = True
    masked = compare_volumes(r, t, QCConfig(domain="mask"), body_mask=body).result
    liver = next(e for e in masked["labels"] if e["label"] == "liver")
    assert image["liver"]["domain"] == "image" and bbox["liver"]["domain"] == "bbox" and liver["domain"] == "mask"
    liver_image = image["liver"]
    assert liver_image["tn"] == grid().n_voxels - (liver_image["tp"] + liver_image["fp"] + liver_image["fn"])
    assert image["liver"]["specificity"] > liver["specificity"] > bbox["liver"]["specificity"]
    assert image["liver"]["dice"] == bbox["liver"]["dice"] == liver["dice"]
    assert "domain: image" in case_html(compare_volumes(r, t).__class__(compare_volumes(r, t).result))


# --------------------------------------------------------------------------- readers
def test_nifti_readers_labelmap_colour_table_and_mask_folder(tmp_path: Path) -> None:
    ref, test = two_labelmaps()
    r, _ = write_case(tmp_path, ref, test, NAMES)
    volume = read_labeled_volume(str(r))
    assert volume.reader == "nifti-labelmap"
    assert [(e.value, e.name) for e in volume.labels] == [(1, "liver"), (11, "lesion_a"), (12, "lesion_b")]
    folder = tmp_path / "masks"
    folder.mkdir()
    write_nifti(folder / "liver.nii.gz", (ref == 1).astype(np.uint8), grid())
    write_nifti(folder / "lesion_a.nii.gz", (ref == 11).astype(np.uint8), grid())
    masks = read_labeled_volume(str(folder))
    assert masks.reader == "nifti-mask-folder" and not masks.values_are_codes
    assert sorted(e.name for e in masks.labels) == ["lesion_a", "liver"]
    result = compare_volumes(volume, masks).result
    matched = {e["label"]: e["matched_by"] for e in result["labels"]}
    assert matched == {"liver": "name", "lesion_a": "name", "lesion_b": None}
    assert next(e for e in result["labels"] if e["label"] == "liver")["dice"] == 1.0


def test_sample_case_ground_truth_names_come_from_case_json(sample_case: Any) -> None:
    case = sample_case("ct-chest", slices=40)
    volume = read_labeled_volume(str(Path(case.root) / "ground_truth" / "ct_labels.nii.gz"))
    codes = {e.code for e in volume.labels}
    assert {"LUNG_LEFT", "LUNG_RIGHT"} <= codes


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "absent.nii.gz", "no such file or folder"),
    (lambda p: (p / "x.txt").write_text("hello") and p / "x.txt", "no reader accepts this input"),
    (lambda p: (p / "bad.nii.gz").write_bytes(b"not nifti") and p / "bad.nii.gz", "not a readable NIfTI"),
])
def test_unreadable_inputs_give_one_clear_error(tmp_path: Path, make: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_labeled_volume(str(make(tmp_path)))


def test_float_and_negative_labelmaps_are_refused(tmp_path: Path) -> None:
    data = np.zeros(grid().array_shape, np.float32)
    data[1, 1, 1] = 0.5
    write_nifti(tmp_path / "f.nii.gz", data, grid())
    with pytest.raises(InputError, match="not whole numbers"):
        read_labeled_volume(str(tmp_path / "f.nii.gz"))
    data = np.zeros(grid().array_shape, np.int16)
    data[1, 1, 1] = -3
    write_nifti(tmp_path / "n.nii.gz", data, grid())
    with pytest.raises(InputError, match="negative label value"):
        read_labeled_volume(str(tmp_path / "n.nii.gz"))


def test_mask_folder_on_mixed_grids_is_refused(tmp_path: Path) -> None:
    write_nifti(tmp_path / "a.nii.gz", np.ones(grid().array_shape, np.uint8), grid())
    other = ImageGeometry((48, 40, 30), (0.8, 0.8, 2.0), (-20.0, 10.0, 5.0))
    write_nifti(tmp_path / "b.nii.gz", np.ones(other.array_shape, np.uint8), other)
    with pytest.raises(InputError, match="must share one grid"):
        read_labeled_volume(str(tmp_path))


def test_config_file_and_task_file(tmp_path: Path) -> None:
    """--task: a QC configuration, or a task file whose 'qc' object holds it (validated, v1)."""
    task = tmp_path / "task.json"
    task.write_text(json.dumps({"task_id": "T1", "qc": {"dice_threshold": 0.8, "domain": "bbox",
                                                        "detection": {"criterion": "centre"}}}))
    cfg = load_config(str(task))
    assert cfg.dice_threshold == 0.8 and cfg.domain == "bbox" and cfg.detection.criterion == "centre"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dice_threshold": 1.5}))
    with pytest.raises(InputError, match=r"bad.json: dice_threshold: 1.5 is greater than the maximum of 1"):
        load_config(str(bad))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"qc": {"dice_treshold": 0.8}}))
    with pytest.raises(InputError, match="Additional properties are not allowed"):
        load_config(str(unknown))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_config(str(tmp_path / "broken.json"))


# --------------------------------------------------------------------------- command line
def run_cli(args: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, str, str]:
    from MultiModalAnnotationLib.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_qc_compare_command_writes_json_report_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, test = two_labelmaps()
    r, t = write_case(tmp_path / "in", ref, test, NAMES)
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["qc", "compare", str(r), str(t), "--json", str(out / "qc.json"), "--report",
                               str(out / "qc.html"), "--csv", str(out / "qc.csv"), "--case-id", "C1"], capsys)
    assert code == 1  # the command ran and the verdict is not "fit"
    assert "verdict: needs rework" in stdout
    data = json.loads((out / "qc.json").read_text())
    assert set(data) >= {"labels", "detection", "verdict"} and data["case_id"] == "C1"
    html_text = (out / "qc.html").read_text()
    assert "<svg" in html_text and "data:image/png;base64," in html_text
    for external in ('src="http', "href='http", 'href="http', "<link", "<script", "url("):
        assert external not in html_text  # self-contained
    code, stdout, _ = run_cli(["qc", "compare", str(r), str(r), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["verdict"]["status"] == "fit"


def test_qc_compare_takes_the_template_through_the_loader_hook(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--template goes through RTSSBridgeLib.cliutil.load_label_set (installed by MultiModalAnnotation)."""
    import RTSSBridgeLib.cliutil as cliutil

    ref, test = two_labelmaps()
    r, t = write_case(tmp_path, ref, test, NAMES)
    labels = LabelSet.from_labels([LabelInfo("LIVER", "liver", 1), LabelInfo("LESION_A", "lesion a", 11)])
    monkeypatch.setattr(cliutil, "label_set_loader", lambda path: labels)
    template = tmp_path / "t.json"
    template.write_text("{}")
    _code, stdout, _ = run_cli(["qc", "compare", str(r), str(t), "--template", str(template), "--json"], capsys)
    data = json.loads(stdout)
    assert {e["label"]: e["matched_by"] for e in data["labels"]}["LIVER"] == "code"
    assert any(f["rule"] == "CODE_IN_TEMPLATE" for f in data["rules"])  # lesion_b/lesion_c are not in it


@pytest.mark.parametrize(("extra", "message"), [
    (["--domain", "mask"], "domain 'mask' needs --body-mask FILE"),
    (["--task", "{tmp}/none.json"], "none.json: --task: no such file"),
    (["--threshold", "2"], "dice_threshold: must be between 0 and 1"),
    (["--template", "{tmp}/t.json"], "t.json: no such file"),
])
def test_qc_compare_bad_options_give_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: List[str],
                                              message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import RTSSBridgeLib.cliutil as cliutil

    monkeypatch.setattr(cliutil, "label_set_loader", None)
    ref, test = two_labelmaps()
    r, t = write_case(tmp_path, ref, test, NAMES)
    code, _, err = run_cli(["qc", "compare", str(r), str(t), *[e.replace("{tmp}", str(tmp_path)) for e in extra]],
                           capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_qc_metrics_command_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from QCMetricsLib.metrics import DETECTION_METRICS, PAIR_METRICS

    code, out, _ = run_cli(["qc", "metrics", "--json"], capsys)
    assert code == 0
    assert [m["name"] for m in json.loads(out)["metrics"]] == [m.name for m in PAIR_METRICS + DETECTION_METRICS]


# --------------------------------------------------------------------------- report in a real browser
def chromium_screenshot(html_path: Path, png_path: Path, height: int = 2400) -> None:
    exe = require_tool("chromium", "chromium")
    profile = png_path.parent / f".chromium-{png_path.stem}"
    shutil.rmtree(profile, ignore_errors=True)
    command = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-quic", f"--user-data-dir={profile}",
               f"--window-size=1400,{height}", f"--screenshot={png_path}", html_path.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    shutil.rmtree(profile, ignore_errors=True)
    assert result.returncode == 0 and png_path.is_file(), result.stderr[-2000:]


def png_pixels(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA PNG (all five row filters) into an array: an independent check of
    the report's own PNG writer."""
    import struct
    import zlib

    data = path.read_bytes()
    pos, idat, width, height, colour = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, _depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    channels = 4 if colour == 6 else 3
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * channels)
    out = np.zeros((height, width * channels), dtype=np.int32)
    prev = np.zeros(width * channels, dtype=np.int32)
    for y in range(height):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        cur = np.zeros_like(line)
        for x in range(line.size):
            a = cur[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            p = {0: 0, 1: a, 2: b, 3: (a + b) // 2}.get(int(f))
            if p is None:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else b if pb <= pc else c
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(height, width, channels)[:, :, :3]


@pytest.mark.tools
def test_case_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The case report opens in a real browser: screenshot in Testing/output/qc-case-report.png, with
    the verdict banner's colour and the reference (green) and test (magenta) outlines visible."""
    ref, test = two_labelmaps()
    image = np.random.default_rng(0).normal(100, 20, grid().array_shape)
    r = labeled_volume_from_arrays(ref, grid(), NAMES, image=image)
    c = compare_volumes(r, labeled_volume_from_arrays(test, grid(), NAMES), QCConfig(), case_id="screenshot")
    html_path = tmp_path / "report.html"
    write_case_outputs(c, None, str(html_path))
    OUTPUT.mkdir(exist_ok=True)
    png = OUTPUT / "qc-case-report.png"
    chromium_screenshot(html_path, png, 1800)
    from PIL import Image

    with Image.open(png) as shot:
        pixels = np.asarray(shot.convert("RGB")).astype(np.int32)
    def has(colour: Tuple[int, int, int]) -> bool:
        return bool(np.any(np.all(np.abs(pixels - np.array(colour)) <= 3, axis=-1)))
    assert has((0, 200, 0)) and has((230, 0, 230))  # outlines drawn
    assert has((255, 227, 224))  # the red-tinted "needs rework" banner


def test_png_writer_round_trip(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(rgb))
    assert np.array_equal(png_pixels(path), rgb)
    from PIL import Image

    with Image.open(path) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), rgb)
    with pytest.raises(ValueError, match="expected an"):
        png_bytes(np.zeros((3, 3)))


def test_demo_qc_step_finds_the_planted_second_reader_errors(sample_case: Any, tmp_path: Path) -> None:
    """The headless pipeline ends in a QC report: a second reader made from the ground truth (shifted
    structure, eroded lesion, missed lesion, extra lesion) is compared with it and every planted
    disagreement is found."""
    from MultiModalAnnotationLib.demo import run_qc_step

    case = sample_case("mr-brain-mets", slices=60)
    manifest = json.loads((Path(case.root) / "case.json").read_text())
    entry = next(e for e in manifest["ground_truth"] if e["name"] == "labels")
    summary, checks = run_qc_step(tmp_path, Path(case.root) / entry["path"], entry, None, 0, "demo-test")
    assert checks and all(c["passed"] for c in checks), [c for c in checks if not c["passed"]]
    assert summary["planted"]["eroded"] and summary["planted"]["extra_value"]
    assert (tmp_path / "qc" / "report.html").is_file() and (tmp_path / "qc" / "qc.json").is_file()


def test_series_image_is_the_thumbnail_background(sample_case: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--series: the DICOM series on the reference grid is drawn under the outlines."""
    case = sample_case("ct-chest", slices=40)
    labels = Path(case.root) / "ground_truth" / "ct_labels.nii.gz"
    series = Path(case.root) / "dicom"
    from QCMetricsLib.cli import run_compare

    comparison = run_compare(str(labels), str(labels), series=str(series))
    assert comparison.figures and all(f.image2d is not None for f in comparison.figures)
    code, _, err = run_cli(["qc", "compare", str(labels), str(labels), "--series", str(tmp_path / "none")], capsys)
    assert code == 2 and "--series: not a folder" in err


@pytest.mark.parametrize("name", ["qc-config", "qc-case", "qc-batch"])
def test_qc_schemas_are_versioned_and_every_property_documented(name: str) -> None:
    """Every JSON file QCMetrics reads or writes has a versioned schema whose fields all carry a
    description and examples; the examples of each property validate against it."""
    import jsonschema

    from RTSSBridgeLib.resources import schema_path

    from .test_samples import _walk_properties

    schema = json.loads(schema_path(name).read_text(encoding="utf-8"))
    assert schema["$id"].endswith(f"/{name}/v1")
    jsonschema.Draft202012Validator.check_schema(schema)
    missing: List[str] = []
    _walk_properties(schema, "", missing)
    assert not missing, missing
    for prop, sub in schema["properties"].items():
        for example in sub.get("examples", []):
            if name == "qc-config":
                jsonschema.validate({prop: example}, schema)


def test_an_invalid_case_json_beside_a_labelmap_only_loses_the_names(tmp_path: Path) -> None:
    ref, _ = two_labelmaps()
    (tmp_path / "ground_truth").mkdir()
    write_nifti(tmp_path / "ground_truth" / "labels.nii.gz", ref, grid(), label_map=True)
    (tmp_path / "case.json").write_text(json.dumps({"schema": "something else"}))
    volume = read_labeled_volume(str(tmp_path / "ground_truth" / "labels.nii.gz"))
    assert [e.name for e in volume.labels] == ["label 1", "label 11", "label 12"]


def test_scattered_label_takes_the_sparse_path_with_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A label of scattered small blobs (foreground < 10 % of its box) is measured on the flat-index
    path inside its crop; the numbers equal the box path on the full masks."""
    import QCMetricsLib.kernels as kernels
    from QCMetricsLib.kernels import pair_statistics
    from QCMetricsLib.metrics import compute_pair_metrics

    calls: List[Any] = []
    original = kernels._pair_statistics_sparse
    monkeypatch.setattr(kernels, "_pair_statistics_sparse", lambda *a, **k: calls.append(k) or original(*a, **k))

    rng = np.random.default_rng(11)
    g = ImageGeometry((80, 70, 40), (0.7, 0.9, 1.3), (0.0, 0.0, 0.0))
    ref = np.zeros(g.array_shape, np.uint8)
    test = np.zeros_like(ref)
    for _ in range(12):
        k, j, i = rng.integers([3, 3, 3], [37, 67, 77])
        ref[k - 1:k + 2, j - 2:j + 2, i - 2:i + 1] = 5
        test[k - 1:k + 1, j - 2:j + 3, i - 1:i + 2] = 5
    result = compare_volumes(labeled_volume_from_arrays(ref, g), labeled_volume_from_arrays(test, g)).result
    assert len(calls) == 1 and calls[0]["image_voxels"] == g.n_voxels  # the crop-based sparse path ran
    (entry,) = result["labels"]
    stats = pair_statistics(ref == 5, test == 5, g.spacing_mm, sparse=False)
    expected = {k: v.json_value() for k, v in compute_pair_metrics(stats).items()}
    for name in ("dice", "hausdorff_mm", "hausdorff95_mm", "mean_surface_distance_mm", "masd_mm", "nsd", "tp"):
        assert entry[name] == pytest.approx(expected[name], abs=1e-9), name
