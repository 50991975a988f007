"""Export packages (R-6.11): folder or zip, SHA-256 manifest, verify, read API, unsafe entries."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import pytest

from MultiModalAnnotationLib.cli import main
from MultiModalAnnotationLib.documents import AnnotationDocument, DocumentError, write_document
from MultiModalAnnotationLib.package import export_package, read_package, verify_package
from MultiModalAnnotationLib.sample_documents import document_from_sample
from MultiModalAnnotationLib.tasks import read_task
from MultiModalAnnotationLib.templates import LabelTemplate
from RTSSBridgeLib.errors import InputError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def brain(sample_case_module: Any) -> Tuple[AnnotationDocument, Dict[str, np.ndarray], LabelTemplate]:
    return document_from_sample(Path(sample_case_module.root))


@pytest.fixture(scope="module")
def sample_case_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from RTSSBridgeLib.samples import write_sample

    return write_sample("mr-brain-mets", tmp_path_factory.mktemp("brain") / "case", slices=16)


@pytest.fixture
def package(brain: Tuple[AnnotationDocument, Dict[str, np.ndarray], LabelTemplate], tmp_path: Path) -> Path:
    document, masks, template = brain
    return export_package(tmp_path / "pkg", document, template, masks=masks)


@pytest.mark.parametrize("layout", ["per_mask", "labelmap"])
@pytest.mark.parametrize("as_zip", [False, True])
def test_package_round_trip_through_the_reader(brain: Tuple[AnnotationDocument, Dict[str, np.ndarray], LabelTemplate],
                                               tmp_path: Path, layout: str, as_zip: bool) -> None:
    """R-6.11: export, verify, read back: the same document (plus its export audit line), masks and template."""
    document, masks, template = brain
    out = tmp_path / ("pkg.zip" if as_zip else "pkg")
    export_package(out, document, template, masks=masks, layout=layout, as_zip=as_zip)
    assert verify_package(out).ok
    package = read_package(out)
    assert package.template == template and package.label_set.by_value(11).code == "METASTASIS_1"  # type: ignore[union-attr]
    assert package.document.image == document.image
    assert [a.id for a in package.document.annotations] == [a.id for a in document.annotations]
    assert package.document.metadata["audit"][-1]["action"] == "exported"
    for ident, mask in masks.items():
        assert np.array_equal(package.masks[ident].voxels, mask)
        assert package.masks[ident].geometry.isclose(document.image.geometry, 1e-3)
    if layout == "labelmap":
        values = {a.id: a.data["mask_value"] for a in package.document.annotations if a.type == "mask"}
        assert values["METASTASIS_01"] == 11 and values["ORG_SKULL"] == 2
        assert {a.data["mask_file"] for a in package.document.annotations if a.type == "mask"} == \
            {"masks/labelmap.nii.gz"}


def test_verify_catches_a_changed_byte_a_missing_file_and_an_extra_file(package: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Must show: mmanno package verify reports every changed, missing or extra file."""
    assert main(["package", "verify", str(package)]) == 0
    mask = next((package / "masks").glob("*.nii.gz"))
    data = bytearray(mask.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    mask.write_bytes(bytes(data))
    (package / "template.json").unlink()
    (package / "notes.txt").write_text("added later", "utf-8")
    capsys.readouterr()
    assert main(["package", "verify", str(package), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["changed"] == [mask.relative_to(package).as_posix()]
    assert result["missing"] == ["template.json"]
    assert result["extra"] == ["notes.txt"]
    assert not result["ok"]
    assert main(["package", "verify", str(package)]) == 1
    out = capsys.readouterr().out
    assert f"changed: {mask.relative_to(package).as_posix()}" in out and "missing: template.json" in out
    assert "extra: notes.txt" in out
    with pytest.raises(InputError, match="package does not match its manifest"):
        read_package(package)


def test_verify_of_a_zip_catches_the_same(package: Path, tmp_path: Path) -> None:
    archive = tmp_path / "p.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for p in sorted(package.rglob("*")):
            if p.is_file():
                name = p.relative_to(package).as_posix()
                data = p.read_bytes()
                if name == "annotation.json":
                    data = data.replace(b'"v1.0"', b'"v1.1"')
                if name != "template.json":
                    out.writestr(name, data)
        out.writestr("extra/readme.txt", "x")
        out.writestr("../escape.txt", "x")
    report = verify_package(archive)
    assert report.changed == ["annotation.json"] and report.missing == ["template.json"]
    assert report.extra == ["extra/readme.txt"]
    assert report.unsafe and "../escape.txt" in report.unsafe[0]


def test_a_link_pointing_out_of_the_package_is_reported(package: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret", "utf-8")
    os.symlink(outside, package / "masks" / "evil.nii.gz")
    report = verify_package(package)
    assert report.unsafe and "evil.nii.gz" in report.unsafe[0] and "outside the package" in report.unsafe[0]


def test_manifest_lists_every_file_with_its_digest(package: Path) -> None:
    from RTSSBridgeLib.fileio import sha256_file

    manifest = json.loads((package / "manifest.json").read_text("utf-8"))
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(listed) == on_disk and {"annotation.json", "template.json"} <= on_disk
    for path, entry in listed.items():
        assert entry["sha256"] == sha256_file(package / path) and entry["bytes"] == (package / path).stat().st_size


def test_export_refuses_bad_input_and_writes_nothing(brain: Tuple[AnnotationDocument, Dict[str, np.ndarray],
                                                                  LabelTemplate], tmp_path: Path) -> None:
    document, masks, template = brain
    bad = document.replace(annotations=[a.with_data(attributes={"enhancement": "patchy"})
                                        if a.label_code == "METASTASIS" else a for a in document.annotations])
    target = tmp_path / "bad"
    with pytest.raises(DocumentError, match="not one of the allowed values"):
        export_package(target, bad, template, masks=masks)
    assert not target.exists() and not list(tmp_path.iterdir())
    overlapping = dict(masks)
    overlapping["ORG_BRAIN"] = overlapping["ORG_BRAIN"] | overlapping["METASTASIS_01"]
    with pytest.raises(InputError, match=r"overlaps ORG_BRAIN .* use the per_mask layout"):
        export_package(tmp_path / "lm", document, template, masks=overlapping, layout="labelmap")
    assert not (tmp_path / "lm").exists()
    task = read_task(str(REPO / "Resources" / "tasks" / "thyroid-us-tirads-appendix-a.json"))
    with pytest.raises(DocumentError, match="task_id: the document belongs to"):
        export_package(tmp_path / "t", document, template, masks=masks, task=task)
    export_package(tmp_path / "ok", document, template, masks=masks)
    with pytest.raises(InputError, match="not empty"):
        export_package(tmp_path / "ok", document, template, masks=masks)


def test_package_export_command_from_a_document_with_mask_files(
        brain: Tuple[AnnotationDocument, Dict[str, np.ndarray], LabelTemplate], tmp_path: Path) -> None:
    document, masks, template = brain
    first = export_package(tmp_path / "first", document, template, masks=masks)
    out = tmp_path / "second.zip"
    assert main(["package", "export", str(first / "annotation.json"), "--template", str(first / "template.json"),
                 "--out", str(out), "--zip", "--layout", "labelmap"]) == 0
    assert verify_package(out).ok
    again = read_package(out)
    for ident, mask in masks.items():
        assert np.array_equal(again.masks[ident].voxels, mask)
    doc_only = tmp_path / "doc.json"
    write_document(str(doc_only), document)  # mask files named but not beside it
    assert main(["package", "export", str(doc_only), "--template", "brain-mets-mr", "--out",
                 str(tmp_path / "third")]) == 2
    assert not (tmp_path / "third").exists()
    shutil.rmtree(first)
