"""Batch QC (R-6.9, R-10.2): ``mmanno qc batch`` over a manifest, in parallel processes, surviving
broken cases, with the batch report (JSON validated, CSV, HTML rendered in Chromium)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

from QCMetricsLib.batch import read_manifest, run_batch, summarise
from QCMetricsLib.config import QCConfig
from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.nifti import write_nifti

from .test_qc_compare import OUTPUT, chromium_screenshot

GRID = ImageGeometry((24, 22, 12), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))


def make_cases(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` small cases (organ + lesion, second reader shifted/eroded at random) and a manifest."""
    rng = np.random.default_rng(seed)
    lines = ["case_id,reference,test"]
    for c in range(n):
        ref = np.zeros(GRID.array_shape, np.uint8)
        ref[2:10, 4:18, 4:20] = 1
        ref[5:7, 8:11, 8:11] = 11
        test = np.roll(ref, int(rng.integers(-1, 2)), axis=2)
        if rng.random() < 0.3:
            test[test == 11] = 1  # lesion missed
        folder = root / f"c{c:03d}"
        folder.mkdir(parents=True)
        write_nifti(folder / "ref.nii", ref, GRID, label_map=True)
        write_nifti(folder / "test.nii", test, GRID, label_map=True)
        (folder / "ref.ctbl").write_text("1 organ 1 1 1 255\n11 lesion 1 1 1 255\n")
        (folder / "test.ctbl").write_text("1 organ 1 1 1 255\n11 lesion 1 1 1 255\n")
        lines.append(f"case-{c:03d},c{c:03d}/ref.nii,c{c:03d}/test.nii")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


@pytest.fixture(scope="module")
def batch_200(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Dict[str, Any]]:
    root = tmp_path_factory.mktemp("qc-batch")
    manifest = make_cases(root / "in", 200)
    lines = manifest.read_text().splitlines()
    (root / "in" / "c000" / "test.nii").write_bytes(b"broken")  # a corrupt file
    lines.append("case-missing,c001/ref.nii,nowhere/test.nii")  # a missing file
    manifest.write_text("\n".join(lines) + "\n")
    progress: List[Tuple[int, int]] = []
    summary = run_batch(read_manifest(str(manifest)), root / "out", QCConfig(), workers=2,
                        progress=lambda d, t: progress.append((d, t)))
    summary["_progress"] = progress
    return root / "out", summary


def test_batch_of_200_cases_uses_both_cores(batch_200: Tuple[Path, Dict[str, Any]]) -> None:
    """Two worker processes both compare cases, and their cases run at the same time."""
    _out, summary = batch_200
    cases = [c for c in summary["cases"] if "pid" in c]
    by_pid: Dict[int, List[Tuple[float, float]]] = {}
    for c in cases:
        by_pid.setdefault(c["pid"], []).append((c["started"], c["finished"]))
    assert len(by_pid) == 2 and summary["worker_processes"] == 2
    assert min(len(v) for v in by_pid.values()) >= 20, {k: len(v) for k, v in by_pid.items()}
    (a, b) = by_pid.values()
    overlapping = sum(1 for s, e in a for s2, e2 in b if s < e2 and s2 < e)
    assert overlapping >= 20  # cases of the two processes ran concurrently
    assert summary["_progress"][-1] == (201, 201)


def test_batch_survives_broken_cases_and_writes_its_report(batch_200: Tuple[Path, Dict[str, Any]]) -> None:
    out, summary = batch_200
    by_id = {c["case_id"]: c for c in summary["cases"]}
    assert by_id["case-000"]["status"] == "error" and "not a readable NIfTI" in by_id["case-000"]["error"]
    assert by_id["case-000"]["error"].startswith("test.nii: ")  # file name only, no folder path
    assert by_id["case-missing"]["status"] == "error" and "no such file" in by_id["case-missing"]["error"]
    ok = [c for c in summary["cases"] if c["status"] != "error"]
    assert len(ok) == 199
    assert all((out / c["report"]).is_file() and (out / "cases" / c["case_id"] / "qc.json").is_file() for c in ok)
    assert summary["verdict"]["status"] == "rework"  # two cases could not be evaluated
    assert any("could not be evaluated" in r for r in summary["verdict"]["reasons"])
    data = json.loads((out / "report.json").read_text())
    assert data["schema"].endswith("/qc-batch/v1") and len(data["cases"]) == 201
    organ = next(a for a in data["labels"] if a["label"] == "organ")
    assert organ["cases"] == 199 and 0.8 < organ["dice_mean"] <= 1.0
    lesion = next(a for a in data["labels"] if a["label"] == "lesion")
    missed = sum(1 for c in ok for lab in c["labels"] if lab["label"] == "lesion" and lab["hausdorff_mm"] is None)
    assert missed > 0 and lesion["hausdorff95_mm_worst_case_substituted"] == missed
    csv_rows = (out / "report.csv").read_text().splitlines()
    assert csv_rows[0].startswith("case_id,status,label") and len(csv_rows) > 300


def test_worst_case_policy_replaces_undefined_distances() -> None:
    """An undefined distance (one mask empty) becomes the image diagonal, or is excluded, and is counted."""
    cases = [{"case_id": "a", "status": "fit", "worst_case_distance_mm": 100.0, "volume_signs": [],
              "labels": [{"label": "L", "dice": 1.0, "hausdorff_mm": 2.0, "hausdorff95_mm": 1.0,
                          "mean_surface_distance_mm": 0.5, "masd_mm": 0.5, "volume_ref_ml": 1.0,
                          "volume_test_ml": 1.0, "special_review": False}]},
             {"case_id": "b", "status": "rework", "worst_case_distance_mm": 50.0, "volume_signs": [],
              "labels": [{"label": "L", "dice": 0.0, "hausdorff_mm": None, "hausdorff95_mm": None,
                          "mean_surface_distance_mm": None, "masd_mm": None, "volume_ref_ml": 1.0,
                          "volume_test_ml": 0.0, "special_review": True}]}]
    diag = summarise(cases, QCConfig(), 1, 1.0)["labels"][0]
    assert diag["hausdorff_mm_mean"] == pytest.approx(26.0) and diag["hausdorff_mm_worst_case_substituted"] == 1
    excl = summarise(cases, QCConfig(worst_case_distance="exclude"), 1, 1.0)["labels"][0]
    assert excl["hausdorff_mm_mean"] == pytest.approx(2.0) and excl["hausdorff_mm_worst_case_substituted"] == 1


@pytest.mark.tools
def test_batch_report_renders_in_headless_chromium(batch_200: Tuple[Path, Dict[str, Any]]) -> None:
    out, _ = batch_200
    OUTPUT.mkdir(exist_ok=True)
    chromium_screenshot(out / "report.html", OUTPUT / "qc-batch-report.png", 1600)
    chromium_screenshot(out / "cases" / "case-001" / "report.html", OUTPUT / "qc-batch-case-report.png", 1600)


@pytest.mark.parametrize(("text", "message"), [
    ("case,reference,test\n", "header lacks column(s) case_id"),
    ("case_id,reference,test,extra\n", "unknown column(s) extra"),
    ("case_id,reference,test\n", "lists no case"),
    ("case_id,reference,test\n../up,a,b\n", "must be 1-128 letters"),
    ("case_id,reference,test\nx,a,b\nx,a,b\n", "x repeats line 2"),
    ("case_id,reference,test\nx,,b\n", "manifest.csv:2: reference: is empty"),
])
def test_bad_manifests_are_refused_with_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(str(manifest))


def test_batch_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from MultiModalAnnotationLib.cli import main

    manifest = make_cases(tmp_path / "in", 4, seed=3)
    code = main(["qc", "batch", str(manifest), "--out", str(tmp_path / "out"), "--workers", "2", "--json",
                 str(tmp_path / "b.json"), "--quiet"])
    out = capsys.readouterr().out
    assert code in (0, 1) and "4 cases:" in out
    assert json.loads((tmp_path / "b.json").read_text())["workers"] == 2
    assert main(["qc", "batch", str(manifest), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "output folder exists and is not empty" in capsys.readouterr().err
    assert main(["qc", "batch", str(manifest), "--out", str(tmp_path / "o2"), "--workers", "0", "--quiet"]) == 2
