"""Case workflow, review and arbitration, versions, freeze (R-5.6, R-6.7 - R-6.10, R-6.12)."""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import pytest

from MultiModalAnnotationLib.cli import main
from MultiModalAnnotationLib.documents import AnnotationDocument
from MultiModalAnnotationLib.provenance.audit import verify_trail
from MultiModalAnnotationLib.provenance.case import Case
from MultiModalAnnotationLib.provenance.workflow import State, WorkflowError
from MultiModalAnnotationLib.sample_documents import document_from_sample
from MultiModalAnnotationLib.tasks import TaskDefinition, task_from_dict
from MultiModalAnnotationLib.templates import LabelTemplate
from RTSSBridgeLib.errors import InputError

REPO = Path(__file__).resolve().parents[1]
ADMIN, QC, ARBITER = "ADM1", "Q01", "J01"


def brain_sample(sample_case: Any) -> Tuple[AnnotationDocument, Dict[str, np.ndarray], LabelTemplate]:
    """(document, masks, template) of the small brain-metastases sample (shared, read-only)."""
    return document_from_sample(Path(sample_case("mr-brain-mets", slices=8).root))


@pytest.fixture(scope="module")
def brain(sample_case: Any) -> Tuple[AnnotationDocument, Dict[str, np.ndarray], LabelTemplate]:
    return brain_sample(sample_case)


def make_task(document: AnnotationDocument, high_risk: bool = True) -> TaskDefinition:
    data = json.loads((REPO / "Resources/tasks/thyroid-us-tirads-appendix-a.json").read_text(encoding="utf-8"))
    data["task_id"] = document.task_id
    data["template"] = {"id": document.template_id, "version": document.template_version}
    data["data"] = [{"name": "MR", "kind": "image", "modality": "MR", "role": "reference"}]
    data["objects"] = [{"label_code": code, "annotation_types": ["mask"], "required": True, "multiple": True}
                       for code in sorted({a.label_code for a in document.annotations})]
    data["roles"] = [{"role": "annotator", "scope": "contour", "people": ["A01", "A02", "A03"]},
                     {"role": "reviewer", "scope": "contour", "people": ["R01", "R02", "A01"]},
                     {"role": "arbiter", "scope": "all", "people": [ARBITER]},
                     {"role": "qc", "scope": "all", "people": [QC]},
                     {"role": "administrator", "scope": "all", "people": [ADMIN]}]
    data["review"] = {"high_risk": high_risk, "readers": 2, "reviewers": 2 if high_risk else 1, "score_difference": 1}
    data["qc"].pop("kappa_threshold", None)
    return task_from_dict(data)


def shifted(masks: Dict[str, np.ndarray], ident: str, voxels: int) -> Dict[str, np.ndarray]:
    out = dict(masks)
    out[ident] = np.roll(masks[ident], voxels, axis=2)
    return out


def with_attribute(document: AnnotationDocument, ident: str, key: str, value: Any) -> AnnotationDocument:
    items = []
    for a in document.annotations:
        items.append(a.with_data(attributes={**a.attributes, key: value}) if a.id == ident else a)
    return document.replace(annotations=items)


def admitted(tmp_path: Path, brain: Any, high_risk: bool = True) -> Case:
    document, _, template = brain
    case = Case.create(tmp_path / "case", "CASE_0001", make_task(document, high_risk), template, ADMIN)
    for target in ("admitted", "deidentified", "preprocessed", "annotating"):
        case.advance(ADMIN, "administrator", target)
    return case


def test_case_walks_from_received_to_frozen(brain: Any, tmp_path: Path) -> None:
    """Must show (R-6.8, R-6.9, R-6.10, R-5.6): two readers, a disagreement, arbitration, a rework
    loop, review by two reviewers (high risk), QC, freeze, a change request - every step in the
    trail; illegal steps refused naming the state and the role; the frozen release never changes."""
    document, masks, template = brain
    case = Case.create(tmp_path / "case", "CASE_0001", make_task(document), template, ADMIN)
    assert case.state().state == State.RECEIVED
    with pytest.raises(WorkflowError, match="state 'received'; role 'annotator'"):
        case.advance("A01", "annotator", "admitted")
    for target in ("admitted", "deidentified", "preprocessed", "annotating"):
        case.advance(ADMIN, "administrator", target)
    with pytest.raises(WorkflowError, match="state 'annotating'; role 'reviewer' cannot move the case to 'qc'"):
        case.advance("R01", "reviewer", "qc")

    # model-assisted reader A01: AI proposal, then the human-confirmed result linked to it
    proposal = shifted(masks, "METASTASIS_01", 1)
    case.save_version("A01", "annotator", document, proposal,
                      model={"name": "brain-met-seg", "version": "0.3", "parameters": {"threshold": 0.5}})
    event = case.save_version("A01", "annotator", document, masks, proposal="v1")
    deviation = event["details"]["ai_deviation"]
    row = next(r for r in deviation["labels"] if r["annotation"] == "METASTASIS_01")
    assert row["boundary_shift_mm"] > 0 and row["dice"] < 1
    # reader A02 disagrees: a lesion outlined elsewhere, an attribute graded differently
    doc_b = with_attribute(document, "METASTASIS_02", "enhancement", "solid")
    case.save_version("A02", "annotator", doc_b, shifted(masks, "METASTASIS_02", 6))
    with pytest.raises(WorkflowError, match="only annotator may"):
        case.advance(ADMIN, "administrator", "in_review")
    case.advance("A01", "annotator", "in_review")
    s = case.state()
    assert s.subjects == {"A01": "v2", "A02": "v3"}

    # review: comparison finds the disagreement, consensus proposals are stored for the arbiter
    compared = case.compare("R01")
    assert compared["details"]["disagreement"]
    reasons = " ".join(compared["details"]["reasons"])
    assert "Dice" in reasons and "enhancement" in reasons
    s = case.state()
    assert s.consensus[1] == {"majority": "v4", "staple": "v5"}
    with pytest.raises(WorkflowError, match="drew a version under review"):
        case.review("A01", {"case": "accept"})
    case.review("R01", {"METASTASIS_02": "request_change"}, "two readers outline different lesions")
    with pytest.raises(WorkflowError, match="did not accept"):
        case.advance("R01", "reviewer", "qc")
    with pytest.raises(WorkflowError, match="state 'in_review'; role 'arbiter'"):
        case.arbitrate(ARBITER, "adopt", "reasons", "v4")
    case.advance("R01", "reviewer", "arbitration")

    # arbitration: final, with reasons; the original versions stay
    with pytest.raises(WorkflowError, match="needs a reason"):
        case.arbitrate(ARBITER, "adopt", "", "v4")
    with pytest.raises(InputError, match="no version 'v9'"):
        case.arbitrate(ARBITER, "adopt", "majority of readers", "v9")
    case.arbitrate(ARBITER, "adopt", "A01 outline matches the enhancing rim; consensus adopted", "v4")
    s = case.state()
    assert s.state == State.QC and s.current == "v4" and s.decisions[-1]["version"] == "v4"
    assert {"v1", "v2", "v3", "v4", "v5"} <= set(s.versions)

    # QC fails -> rework loop back to annotating
    with pytest.raises(WorkflowError, match="no passing QC result"):
        case.freeze(ADMIN, "1.0", "training")
    case.qc_result(QC, False, {"dice_min": 0.41}, reason="METASTASIS_02 outline off the lesion")
    with pytest.raises(WorkflowError, match="state 'qc'; role 'annotator'"):
        case.advance("A01", "annotator", "annotating")
    with pytest.raises(WorkflowError, match="needs a reason"):
        case.advance(QC, "qc", "annotating")
    case.advance(QC, "qc", "annotating", reason="redo METASTASIS_02 on the enhancing rim")
    rework = case.state().reworks[-1]
    assert rework["base"] == "v4" and rework["change"] is None
    case.save_version("A01", "annotator", document, masks)
    s = case.state()
    assert s.reworks[-1]["change"]["version"] == "v6"
    assert s.reworks[-1]["change"]["diff"]["base"] == "v4"
    case.advance("A01", "annotator", "in_review")  # a rework round fixes one version

    # uncertainty flag requires review; high risk requires two reviewers
    case.flag("A01", "annotator", "METASTASIS_03", "unclear_boundary", "rim blurred by motion")
    with pytest.raises(WorkflowError, match="opinion on METASTASIS_03"):
        case.review("R01", {"case": "accept"})
    case.review("R01", {"case": "accept", "METASTASIS_03": "accept"})
    with pytest.raises(WorkflowError, match="1 of 2 required reviewer"):
        case.advance("R01", "reviewer", "qc")
    case.review("R02", {"case": "accept"})
    case.advance("R02", "reviewer", "qc")
    case.qc_result(QC, True, {"dice_min": 0.93})
    assert case.state().reworks[-1]["recheck"]["passed"] is True
    with pytest.raises(WorkflowError, match="role 'administrator' cannot freeze: A01 is not among"):
        case.freeze("A01", "1.0", "training")
    case.freeze(ADMIN, "1.0", "training", "first release", date="2026-11-22")
    assert case.state().state == State.FROZEN

    # frozen: modification refused, files unchanged
    release = tmp_path / "case" / "releases" / "1.0"
    before = {p: p.read_bytes() for p in release.rglob("*") if p.is_file()}
    assert all(not (p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) for p in before)
    with pytest.raises(WorkflowError, match="state 'frozen'; role 'annotator' cannot save a version"):
        case.save_version("A01", "annotator", document, shifted(masks, "METASTASIS_01", 2))
    with pytest.raises(WorkflowError, match="never modified"):
        case.modify_release("1.0")
    with pytest.raises(WorkflowError, match="change-request"):
        case.advance(ADMIN, "administrator", "annotating")
    with pytest.raises(WorkflowError, match="state 'frozen'"):
        case.advance("A01", "annotator", "exception", reason="x")
    assert {p: p.read_bytes() for p in release.rglob("*") if p.is_file()} == before
    assert case.verify().ok

    # change request: a new version; the frozen release still verifies
    case.change_request(ADMIN, "1.0", "METASTASIS_04 label correction requested by the data owner")
    case.save_version("A01", "annotator", with_attribute(document, "METASTASIS_04", "enhancement", "ring"), masks)
    s = case.state()
    assert s.state == State.ANNOTATING and s.releases[0]["version"] == "v6" and "v7" in s.versions
    report = case.verify()
    assert report.ok and report.releases == {"1.0": []}
    assert {p: p.read_bytes() for p in release.rglob("*") if p.is_file()} == before

    # every step is in the (intact) trail
    trail = verify_trail(tmp_path / "case" / "audit.jsonl")
    assert trail.ok
    actions = [e["action"] for e in trail.events]
    moves = [(e["transition"]["from"], e["transition"]["to"]) for e in trail.events if e.get("transition")]
    assert moves == [("received", "admitted"), ("admitted", "deidentified"), ("deidentified", "preprocessed"),
                     ("preprocessed", "annotating"), ("annotating", "in_review"), ("in_review", "arbitration"),
                     ("arbitration", "qc"), ("qc", "annotating"), ("annotating", "in_review"), ("in_review", "qc"),
                     ("qc", "frozen"), ("frozen", "annotating")]
    for action in ("created", "model_proposal", "confirmed", "edited", "compared", "consensus", "reviewed",
                   "arbitrated", "qc_result", "rework_requested", "flagged", "frozen", "change_request",
                   "change_approved"):
        assert action in actions, action
    assert all(e["case"] == "CASE_0001" for e in trail.events)


def test_release_tampering_is_detected(brain: Any, tmp_path: Path) -> None:
    """R-6.10: a release file changed behind the tool's back (e.g. by root) fails verification."""
    document, masks, _ = brain
    case = admitted(tmp_path, brain, high_risk=False)
    case.save_version("A01", "annotator", document, masks)
    case.save_version("A02", "annotator", document, masks)
    case.advance("A01", "annotator", "in_review")
    assert not case.compare("R01")["details"]["disagreement"]
    case.review("R01", {"case": "accept"})
    case.advance("R01", "reviewer", "qc")
    case.qc_result(QC, True)
    case.freeze(ADMIN, "2026.1", "validation")
    target = tmp_path / "case" / "releases" / "2026.1" / "annotation.json"
    os.chmod(target, 0o644)
    target.write_text(target.read_text().replace("METASTASIS_01", "METASTASIS_09"))
    problems = case.verify().releases["2026.1"]
    assert any("annotation.json: changed" in p for p in problems)
    assert any("annotation.json: writable" in p for p in problems)
    with pytest.raises(InputError, match=r"no release '9\.9'"):
        case.change_request(ADMIN, "9.9", "fix")


def test_exception_and_rollback(brain: Any, tmp_path: Path) -> None:
    """R-6.12: an exception halts the case (reason recorded); only an administrator rolls it back,
    to the stage where it halted or an earlier one, with a reason."""
    document, masks, _ = brain
    case = admitted(tmp_path, brain)
    with pytest.raises(WorkflowError, match="needs a reason"):
        case.advance("A01", "annotator", "exception")
    case.advance("A01", "annotator", "exception", reason="series incomplete: slices missing")
    with pytest.raises(WorkflowError, match="state 'exception'; role 'annotator' cannot save a version"):
        case.save_version("A01", "annotator", document, masks)
    with pytest.raises(WorkflowError, match="state 'exception'; role 'annotator' cannot roll the case back"):
        case.advance("A01", "annotator", "preprocessed", reason="fixed")
    with pytest.raises(WorkflowError, match="halted in 'annotating'"):
        case.advance(ADMIN, "administrator", "qc", reason="skip")
    with pytest.raises(WorkflowError, match="needs a reason"):
        case.advance(ADMIN, "administrator", "preprocessed")
    event = case.advance(ADMIN, "administrator", "preprocessed", reason="series re-imported complete")
    assert event["action"] == "rollback" and event["transition"] == {"from": "exception", "to": "preprocessed"}
    assert case.state().state == State.PREPROCESSED
    with pytest.raises(InputError, match="not a state"):
        case.advance(ADMIN, "administrator", "done")


def test_roles_come_from_the_task(brain: Any, tmp_path: Path) -> None:
    """R-6.8: a person acts only in a role the task gives them; a task without a QC role cannot reach freeze."""
    document, masks, template = brain
    task = make_task(document)
    data = copy.deepcopy(task.data)
    data["roles"] = [r for r in data["roles"] if r["role"] != "administrator"]
    with pytest.raises(WorkflowError, match="names no administrator role"):
        Case.create(tmp_path / "c1", "CASE_1", task_from_dict(data), template, ADMIN)
    case = admitted(tmp_path, brain)
    with pytest.raises(WorkflowError, match="A09 is not among the task's annotator people"):
        case.save_version("A09", "annotator", document, masks)
    with pytest.raises(WorkflowError, match="1 reader version"):
        case.save_version("A01", "annotator", document, masks)
        case.advance("A01", "annotator", "in_review")
    with pytest.raises(InputError, match="a case already exists"):
        Case.create(tmp_path / "case", "CASE_0001", task, template, ADMIN)
    with pytest.raises(InputError, match="no case here"):
        Case(tmp_path / "nothing")


def test_version_diff_lists_labels_attributes_and_mask_change(brain: Any, tmp_path: Path) -> None:
    """R-6.8: versions are content-addressed and kept; a diff lists changed attributes and each
    changed mask's Dice and volume change (QCMetrics)."""
    document, masks, _ = brain
    case = admitted(tmp_path, brain)
    case.save_version("A01", "annotator", document, masks)
    case.save_version("A01", "annotator", with_attribute(document, "METASTASIS_02", "enhancement", "solid"),
                      shifted(masks, "METASTASIS_02", 2))
    again = case.save_version("A01", "annotator", document, masks)
    s = case.state()
    assert s.versions["v3"].tree == s.versions["v1"].tree and again["before"] == s.versions["v2"].tree
    diff = case.diff("v1", "v2")
    assert diff["changed"][0]["id"] == "METASTASIS_02"
    assert {"field": "attributes.enhancement", "before": "ring", "after": "solid"} in diff["changed"][0]["changes"]
    change = diff["masks"][0]
    assert 0 < change["dice"] < 1 and change["volume_change_ml"] == pytest.approx(0, abs=0.05)
    assert case.verify().ok
    objects = list((tmp_path / "case" / "objects").iterdir())
    victim = next(p for p in objects if p.stat().st_size > 1000)
    os.chmod(victim, 0o644)
    data = victim.read_bytes()
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # a real change (the last byte may be 0)
    assert not case.verify().ok


def test_case_cli(brain: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """R-6.12: mmanno case create/status/advance/save/compare/review/history/verify; an illegal step
    is one line naming the state and the role, exit 2."""
    from MultiModalAnnotationLib.package import export_package

    document, masks, template = brain
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(make_task(document, high_risk=False).data))
    folder = str(tmp_path / "case")
    assert main(["case", "create", folder, "--case", "CASE_9", "--task", str(task_file), "--actor", ADMIN]) == 0
    for target in ("admitted", "deidentified", "preprocessed", "annotating"):
        assert main(["case", "advance", folder, "--to", target, "--actor", ADMIN, "--role", "administrator"]) == 0
    capsys.readouterr()
    assert main(["case", "advance", folder, "--to", "qc", "--actor", "A01", "--role", "annotator"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "state 'annotating'" in err and "role 'annotator'" in err
    package = export_package(tmp_path / "pkg", document, template, masks=masks)
    for reader in ("A01", "A02"):
        assert main(["case", "save", folder, "--package", str(package), "--actor", reader]) == 0
    assert main(["case", "advance", folder, "--to", "in_review", "--actor", "A01", "--role", "annotator"]) == 0
    assert main(["case", "compare", folder, "--actor", "R01"]) == 0
    assert main(["case", "review", folder, "--actor", "R01", "--opinion", "case=accept"]) == 0
    assert main(["case", "advance", folder, "--to", "qc", "--actor", "R01", "--role", "reviewer"]) == 0
    assert main(["case", "qc", folder, "--actor", QC, "--pass"]) == 0
    assert main(["case", "freeze", folder, "--actor", ADMIN, "--release", "1.0", "--scope", "training"]) == 0
    capsys.readouterr()
    assert main(["case", "status", folder, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "frozen" and status["releases"][0]["release"] == "1.0"
    assert main(["case", "history", folder]) == 0
    assert "ADM1/administrator frozen qc -> frozen" in capsys.readouterr().out
    assert main(["case", "history", folder, "--diff", "v1", "v2"]) == 0
    assert "no change" in capsys.readouterr().out
    assert main(["case", "verify", folder]) == 0
    assert main(["case", "save", folder, "--package", str(package), "--actor", "A01"]) == 2
    assert "state 'frozen'" in capsys.readouterr().err
    assert main(["case", "change-request", folder, "--actor", ADMIN, "--release", "1.0", "--reason",
                 "relabel requested"]) == 0
    assert main(["case", "status", str(tmp_path / "none")]) == 2


def test_case_cli_model_proposal_arbitration_and_flags(brain: Any, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """R-6.6.3/R-6.7/R-6.8: the CLI records an AI proposal and its confirmation, a flag, a
    disagreement, the arbiter's decision and a failed QC; bad opinions are one line, exit 2."""
    from MultiModalAnnotationLib.package import export_package

    document, masks, template = brain
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(make_task(document, high_risk=False).data))
    folder = str(tmp_path / "case")
    assert main(["case", "create", folder, "--case", "CASE_8", "--task", str(task_file), "--actor", ADMIN]) == 0
    for target in ("admitted", "deidentified", "preprocessed", "annotating"):
        assert main(["case", "advance", folder, "--to", target, "--actor", ADMIN, "--role", "administrator"]) == 0
    proposal = export_package(tmp_path / "ai", document, template, masks=shifted(masks, "METASTASIS_01", 1))
    same = export_package(tmp_path / "a", document, template, masks=masks)
    other = export_package(tmp_path / "b", document, template, masks=shifted(masks, "METASTASIS_02", 6))
    assert main(["case", "save", folder, "--package", str(proposal), "--actor", "A01", "--model", "seg",
                 "--model-version", "1.2", "--param", "threshold=0.5"]) == 0
    assert main(["case", "save", folder, "--package", str(same), "--actor", "A01", "--proposal", "v1"]) == 0
    assert main(["case", "save", folder, "--package", str(other), "--actor", "A02"]) == 0
    assert main(["case", "save", folder, "--package", str(other), "--actor", "A02", "--model", "seg"]) == 2
    assert main(["case", "flag", folder, "--actor", "A02", "--role", "annotator", "--target", "METASTASIS_02",
                 "--category", "artefact"]) == 0
    assert main(["case", "advance", folder, "--to", "in_review", "--actor", "A02", "--role", "annotator"]) == 0
    capsys.readouterr()
    assert main(["case", "compare", folder, "--actor", "R01"]) == 0
    assert "METASTASIS_02: Dice" in capsys.readouterr().out
    assert main(["case", "review", folder, "--actor", "R01", "--opinion", "case=maybe"]) == 2
    assert main(["case", "review", folder, "--actor", "R01", "--opinion", "METASTASIS_02=reject",
                 "--comment", "outlines a vessel"]) == 0
    assert main(["case", "advance", folder, "--to", "arbitration", "--actor", "R01", "--role", "reviewer"]) == 0
    assert main(["case", "arbitrate", folder, "--actor", ARBITER, "--decision", "adopt", "--version", "v2",
                 "--reasons", "A01 outline follows the enhancing rim"]) == 0
    assert main(["case", "qc", folder, "--actor", QC, "--fail"]) == 2
    assert main(["case", "qc", folder, "--actor", QC, "--fail", "--reason", "slice 3 leak"]) == 0
    capsys.readouterr()
    assert main(["case", "status", folder, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "qc" and status["current"] == "v2"
    versions = {v["name"]: v for v in status["versions"]}
    assert versions["v1"]["origin"] == "model" and versions["v2"]["proposal"] == "v1"
    assert status["decisions"][0]["reasons"] == "A01 outline follows the enhancing rim"
    assert status["qc_results"][0]["passed"] is False and not status["flags"]
    events = Case(folder).trail.events()
    assert events[5]["details"]["model"] == {"name": "seg", "version": "1.2", "parameters": {"threshold": "0.5"}}
    assert "ai_deviation" in events[6]["details"]


def test_two_processes_cannot_both_take_the_same_step(brain: Any, tmp_path: Path) -> None:
    """R-5.6/R-6.12: the state check and the append happen under the trail's lock: of two people
    admitting the same case at once, exactly one succeeds and the other is refused naming the state."""
    import subprocess
    import sys

    document, _, template = brain
    case = Case.create(tmp_path / "case", "CASE_0001", make_task(document), template, ADMIN)
    code = ("import sys\nfrom MultiModalAnnotationLib.cli import main\n"
            f"sys.exit(main(['case', 'advance', {str(case.folder)!r}, '--to', 'admitted', '--actor', 'ADM1', "
            "'--role', 'administrator']))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert sorted(r[0] for r in results) == [0, 2]
    assert "state 'admitted'" in next(err for rc, err in results if rc == 2)
    events = case.trail.events()
    assert [e["action"] for e in events] == ["created", "transition"] and verify_trail(case.trail.path).ok
