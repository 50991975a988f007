"""The ``mmanno`` command line: inspect agrees with SimpleITK on every sample kind (oblique
included), reports dropped and duplicated slices with the files named, and every subcommand
fails with one line and a non-zero status on bad input (ARCHITECTURE.md "Command line")."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from MultiModalAnnotationLib.cli import main
from RTSSBridgeLib.samples import write_sample

VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "ct-chest": ("ct-chest", {}),
    "ct-chest-oblique": ("ct-chest", {"oblique": True, "slices": 40}),
    "mr-brain-mets": ("mr-brain-mets", {}),
    "mr-brain-mets-oblique": ("mr-brain-mets", {"oblique": True, "slices": 60}),
    "pet-ct": ("pet-ct", {}),
    "pet-ct-oblique": ("pet-ct", {"oblique": True, "slices": 40}),
    "us-thyroid": ("us-thyroid", {}),
    "xray-ra": ("xray-ra", {}),
    "ct-chest-drop": ("ct-chest", {"drop_slice": 17, "slices": 40}),
    "ct-chest-duplicate": ("ct-chest", {"duplicate_slice": 9, "slices": 40}),
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-samples")
    return {name: write_sample(kind, root / name, seed=3, **options).root
            for name, (kind, options) in VARIANTS.items()}


def run(args: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def inspect_json(path: Path, capsys: pytest.CaptureFixture[str]) -> List[Dict[str, Any]]:
    code, out, err = run(["inspect", str(path), "--json", "--quiet"], capsys)
    assert code == 0, err
    result: List[Dict[str, Any]] = json.loads(out)
    return result


def sha256_float64(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f8").tobytes()).hexdigest()


def simpleitk_views(dicom_root: Path) -> List[Dict[str, Any]]:
    """Every image SimpleITK finds under ``dicom_root``: 3-D series through GDCM's series
    grouping and sorting, 2-D images (no ImagePositionPatient) one file at a time."""
    views = []
    for folder in sorted({p.parent for p in dicom_root.rglob("*.dcm")}):
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
            if "ImagePositionPatient" not in pydicom.dcmread(files[0], stop_before_pixels=True):
                for f in files:
                    image = sitk.ReadImage(f)
                    views.append({"uid": uid, "image": image, "files": [f]})
                continue
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            views.append({"uid": uid, "image": reader.Execute(), "files": list(files)})
    return views


@pytest.mark.parametrize("name", [n for n in VARIANTS if not n.endswith(("-drop", "-duplicate"))])
def test_inspect_agrees_with_simpleitk(name: str, samples: Dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    entries = inspect_json(samples[name] / "dicom", capsys)
    views = simpleitk_views(samples[name] / "dicom")
    assert len(entries) == len(views)
    case = json.loads((samples[name] / "case.json").read_text())
    assert sorted(e["series_uid"] for e in entries) == sorted(
        s["series_instance_uid"] for s in case["series"] for _ in range(max(1, s["n_files"] if
                                                                          s["modality"] == "CR" else 1)))
    unmatched = list(views)
    for entry in entries:
        assert entry["loaded"] and entry["voxels"] is not None
        assert not [p for p in entry["problems"] if p["severity"] == "error"], entry["problems"]
        candidates = [v for v in unmatched if v["uid"] == entry["series_uid"]
                      and sha256_float64(sitk.GetArrayViewFromImage(v["image"])) == entry["voxels"]["sha256_float64"]]
        assert candidates, f"no SimpleITK image of series {entry['series_uid']} has the same voxels"
        view = candidates[0]
        unmatched.remove(view)
        image = view["image"]
        dims = image.GetDimension()
        assert list(image.GetSize()) == entry["shape"][:dims]
        np.testing.assert_allclose(image.GetOrigin(), entry["origin_lps"][:dims], atol=1e-4)
        if dims == 3 and entry["shape"][2] > 1:
            np.testing.assert_allclose(image.GetSpacing(), entry["spacing_mm"], atol=1e-4)
            np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), entry["direction"], atol=1e-6)
        elif entry["modality"] == "US":
            # GDCM does not read the calibration of ultrasound regions (PS3.3 C.8.5.5) and gives
            # 1 x 1 "mm" pixels; mmanno uses the region's PhysicalDeltaX/Y (cm) -> mm.
            ds = pydicom.dcmread(view["files"][0], stop_before_pixels=True)
            region = ds.SequenceOfUltrasoundRegions[0]
            assert image.GetSpacing()[:2] == (1.0, 1.0)
            np.testing.assert_allclose(entry["spacing_mm"][:2], [float(region.PhysicalDeltaX) * 10,
                                                                 float(region.PhysicalDeltaY) * 10], rtol=1e-12)
        else:
            np.testing.assert_allclose(image.GetSpacing()[:2], entry["spacing_mm"][:2], atol=1e-4)
        assert entry["n_files"] == len(view["files"])
    if name.endswith("oblique"):
        primary = next(s for s in case["series"] if s["role"] == "primary")
        entry = next(e for e in entries if e["series_uid"] == primary["series_instance_uid"])
        direction = np.asarray(entry["direction"])
        assert np.all(np.abs(direction[np.abs(direction) > 1e-9]) < 0.9999), "primary series should be oblique"


def _file_for_slice(series_dir: Path, k: int) -> str:
    def position_along_normal(path: Path) -> float:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        return float(np.dot(np.cross(iop[:3], iop[3:]), np.asarray(ds.ImagePositionPatient, float)))

    files = sorted(series_dir.glob("*.dcm"), key=position_along_normal)
    return files[k].name


def test_inspect_reports_dropped_slice_with_neighbours(samples: Dict[str, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = samples["ct-chest-drop"]
    case = json.loads((root / "case.json").read_text())
    ct = next(s for s in case["series"] if s["key"] == "CT")
    dropped = ct["options_applied"]["drop_slice"]
    entry = next(e for e in inspect_json(root / "dicom", capsys) if e["modality"] == "CT")
    gaps = [p for p in entry["problems"] if p["code"] == "MISSING_SLICES"]
    assert len(gaps) == 1 and gaps[0]["severity"] == "error"
    named = sorted(os.path.basename(f) for f in gaps[0]["files"])
    series_dir = root / ct["dir"]
    assert named == sorted([_file_for_slice(series_dir, dropped["k"] - 1), _file_for_slice(series_dir, dropped["k"])])
    assert dropped["file"] not in named  # the missing file is gone, its neighbours are named


def test_inspect_reports_duplicated_slice_with_both_files(samples: Dict[str, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = samples["ct-chest-duplicate"]
    case = json.loads((root / "case.json").read_text())
    dup = next(s for s in case["series"] if s["key"] == "CT")["options_applied"]["duplicate_slice"]
    entry = next(e for e in inspect_json(root / "dicom", capsys) if e["modality"] == "CT")
    dups = [p for p in entry["problems"] if p["code"] == "DUPLICATE_POSITION"]
    assert len(dups) == 1
    assert sorted(os.path.basename(f) for f in dups[0]["files"]) == sorted([dup["file"], dup["duplicate_file"]])
    assert entry["shape"][2] == 40


def test_inspect_json_to_file_and_headers_only(samples: Dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "inspect.json"
    code, stdout, _ = run(["inspect", str(samples["us-thyroid"] / "dicom"), "--json", str(out), "--headers-only",
                           "--quiet"], capsys)
    assert code == 0 and "US" in stdout  # the human table still goes to stdout
    data = json.loads(out.read_text())
    assert data[0]["voxels"] is None and data[0]["shape"] == [640, 480, 1]
    assert [p["code"] for p in data[0]["problems"]] == ["NO_PATIENT_GEOMETRY"]


def test_inspect_nifti(samples: Dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    labels = samples["ct-chest"] / "ground_truth" / "ct_labels.nii.gz"
    (entry,) = inspect_json(labels, capsys)
    assert entry["transform_source"] == "sform" and entry["shape"][:2] == [512, 512]
    assert entry["voxels"]["max"] >= 11


@pytest.mark.parametrize(("args", "message"), [
    (["inspect", "/nonexistent/path"], "mmanno inspect: error: /nonexistent/path: no such file or directory"),
    (["sample", "us-thyroid", "--oblique", "--out", "{tmp}/x"], "mmanno sample: error: oblique"),
    (["sample", "ct-chest", "--slices", "1", "--out", "{tmp}/x"], "mmanno sample: error: slices"),
    (["sample", "ct-chest"], "mmanno sample: error: the following arguments are required: --out"),
    (["inspect"], "mmanno inspect: error: the following arguments are required: path"),
    (["nonsense"], "mmanno: error: argument COMMAND: invalid choice"),
])
def test_bad_input_gives_one_line_and_exit_2(args: List[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    try:
        code, _, err = run(args, capsys)
    except SystemExit as exc:  # argparse usage errors exit from inside parse_args
        code = int(exc.code or 0)
        err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(message), lines[0]


def test_inspect_folder_without_dicom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b.zip").write_bytes(b"PK\x03\x04")
    code, _, err = run(["inspect", str(tmp_path), "--quiet"], capsys)
    assert code == 2
    assert err.strip() == f"mmanno inspect: error: {tmp_path}: no loadable image series among 2 file(s) (2 NOT_DICOM)"


def test_every_subcommand_has_help_and_json() -> None:

    from MultiModalAnnotationLib.cli import build_parser

    def leaves(parser: Any, prefix: str) -> List[Tuple[str, Any]]:
        """Every runnable subcommand; groups (``template validate``...) are walked down."""
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            return [(prefix, parser)]
        found: List[Tuple[str, Any]] = []
        for name, subparser in groups[0].choices.items():
            found += leaves(subparser, f"{prefix} {name}".strip())
        return found

    commands = leaves(build_parser(), "")
    assert {"inspect", "sample", "demo", "check", "deid", "template validate", "package verify", "qc compare",
            "rtss import", "rtss export", "seg import", "seg export", "register", "fusion align",
            "fusion check", "fusion record"} <= set(dict(commands))
    for name, subparser in commands:
        options = {o for action in subparser._actions for o in action.option_strings}
        assert {"--help", "--json"} <= options, name


def test_parser_of_one_command_is_the_full_parsers_subparser() -> None:
    """``mmanno COMMAND ...`` builds only that command's parser (argparse took 0.1 s for all 19 of
    them): every command gets the same help as in the full parser, and an unknown command still
    gets argparse's list of choices."""
    from MultiModalAnnotationLib.cli import build_parser

    def subparsers(parser: Any) -> Dict[str, Any]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return dict(action.choices)

    full = subparsers(build_parser())
    assert len(full) > 15
    for name, sub in full.items():
        only = subparsers(build_parser(name))
        assert set(only) == {name}, name
        assert only[name].format_help() == sub.format_help(), name
    assert set(subparsers(build_parser("no-such-command"))) == set(full)


def test_console_entry_point_uses_one_blas_thread_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``mmanno`` script (``cli.run``) defaults OPENBLAS_NUM_THREADS to 1 (start-up time, and a
    fork-safe ``rtss import``) and keeps a value the user set; it leaves through os._exit with
    main's status (test_console_script_runs checks that the output is all there)."""
    from MultiModalAnnotationLib import cli

    seen: List[str] = []
    monkeypatch.setattr(cli, "main", lambda argv=None: seen.append(os.environ["OPENBLAS_NUM_THREADS"]) or 0)

    def leave(code: int) -> None:  # run() ends with os._exit: here it must not end pytest
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", leave)
    for preset in (None, "4"):
        if preset is None:
            monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OPENBLAS_NUM_THREADS", preset)
        with pytest.raises(SystemExit) as stop:
            cli.run()
        assert stop.value.code == 0
    assert seen == ["1", "4"]


def test_console_script_runs(samples: Dict[str, Path]) -> None:
    exe = Path(sys.executable).with_name("mmanno")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "MultiModalAnnotationLib.cli"]
    result = subprocess.run([*command, "inspect", str(samples["xray-ra"] / "dicom"), "--json", "--quiet"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # the whole document arrives through the pipe (run() flushes)
    assert {e["modality"] for e in data} == {"CR"}
    bad = subprocess.run([*command, "inspect", str(samples["xray-ra"] / "missing"), "--quiet"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_sample_cli_writes_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["sample", "us-thyroid", "--out", str(tmp_path / "us"), "--seed", "4", "--json", "--quiet"],
                       capsys)
    assert code == 0
    manifest = json.loads(out)
    assert manifest["kind"] == "us-thyroid" and manifest["seed"] == 4
    assert (tmp_path / "us" / "case.json").is_file()


def test_demo_passes_and_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["demo", "--kind", "pet-ct", "--out", str(tmp_path / "demo"), "--quiet"], capsys)
    assert code == 0, out + err
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["passed"] and len(report["checks"]) >= 5
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "all checks passed" in html and "<table>" in html
    assert report["qc"]["report"] == "qc/report.html" and (tmp_path / "demo" / "qc" / "report.html").is_file()
    assert 'href="qc/report.html"' in html
    assert report["fusion"]["check"] == "pet_ct_body_outline" and report["fusion"]["passed"]  # R-8.4.1.3
    assert "PET-CT body-outline check" in html
    code, _, err = run(["demo", "--kind", "pet-ct", "--out", str(tmp_path / "demo"), "--quiet"], capsys)
    assert code == 2 and "exists and is not empty" in err


def test_startup_imports_no_heavy_library() -> None:
    """Every ``mmanno`` run (``--help`` included) starts without pydicom, nibabel, scipy, SimpleITK,
    highdicom, jsonschema, Pillow or openpyxl: each command imports what it uses, so a quick
    command is quick (the RTSS and de-identification benchmarks time whole processes)."""
    heavy = ("pydicom", "nibabel", "scipy", "SimpleITK", "highdicom", "jsonschema", "PIL", "openpyxl", "vtk", "slicer")
    script = ("import sys; from MultiModalAnnotationLib.cli import build_parser; build_parser(); "
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
