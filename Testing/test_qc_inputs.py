"""QC compare reads every kind of annotation the project writes (R-10.2, R-5.7): NIfTI labelmaps,
RT Structure Sets on their series (RTSSBridge's importer) and annotation export packages
(MultiModalAnnotation's reader, registered by the command line), and matches their labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from MultiModalAnnotationLib.cli import main


@pytest.fixture(scope="module")
def brain(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """A small mr-brain-mets case, its shipped RTSS and an export package of its ground truth."""
    from MultiModalAnnotationLib.package import export_package
    from MultiModalAnnotationLib.sample_documents import document_from_sample
    from RTSSBridgeLib.samples import write_sample

    root = tmp_path_factory.mktemp("qc-inputs")
    case = write_sample("mr-brain-mets", root / "case", seed=4, slices=60)
    manifest = json.loads(case.manifest.read_text())
    shipped = manifest["structure_sets"][0]
    document, masks, template = document_from_sample(case.root)
    export_package(root / "package", document, template, masks=masks)
    export_package(root / "package.zip", document, template, masks=masks, as_zip=True)
    labelmap = next(g for g in manifest["ground_truth"] if g["path"].endswith(".nii.gz") and g.get("labels"))
    return {"root": root, "series": str(case.root / "dicom"),
            "rtss": str(case.root / shipped["dir"] / shipped["file"]),
            "labelmap": str(case.root / labelmap["path"]), "package": str(root / "package"),
            "zip": str(root / "package.zip"),
            "rois": shipped["rois"]}


def compare(args: List[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Tuple[int, Dict[str, Any]]:
    out = tmp_path / "qc.json"
    code = main(["qc", "compare", *args, "--json", str(out)])
    capsys.readouterr()
    return code, json.loads(out.read_text())


def dice_by_label(result: Dict[str, Any]) -> Dict[str, Any]:
    return {e["label"]: (e["matched_by"], e["dice"]) for e in result["labels"]}


def test_rtss_against_its_ground_truth_with_the_template(brain: Dict[str, Any], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _code, result = compare([brain["labelmap"], brain["rtss"], "--series", brain["series"], "--template",
                             "brain-mets-mr"], tmp_path, capsys)
    by_label = dice_by_label(result)
    assert by_label["SKULL"] == ("code", 1.0)  # '*Skull' mapped to SKULL by the template's name rules
    lesions = [spec["label_code"] for spec in brain["rois"] if spec["label_code"].startswith("METASTASIS")]
    assert lesions and all(by_label[code][1] == 1.0 for code in lesions)
    assert by_label["BRAIN"][1] == 0.0  # the structure set has no brain ROI: reported, not hidden


def test_rtss_needs_its_series(brain: Dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["qc", "compare", brain["rtss"], brain["rtss"], "--json", "-"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "give --series DIR" in err[0]


@pytest.mark.parametrize("form", ["package", "zip"])
def test_package_against_labelmap_matches_every_code(brain: Dict[str, Any], tmp_path: Path, form: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, result = compare([brain[form], brain["labelmap"]], tmp_path, capsys)
    by_label = dice_by_label(result)
    assert by_label and all(v == ("code", 1.0) for v in by_label.values()), by_label
    assert code == 0 and result["verdict"]["status"] == "fit"


def test_package_must_match_its_manifest(brain: Dict[str, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(brain["package"], broken)
    doc = broken / "annotation.json"
    doc.write_text(doc.read_text().replace('"version"', '"version" ', 1))
    code = main(["qc", "compare", str(broken), brain["labelmap"], "--json", "-"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "package does not match its manifest" in err[0]
