"""Multi-reader consensus and sampling QC (R-6.8, R-6.9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from MultiModalAnnotationLib.cli import main
from MultiModalAnnotationLib.provenance.audit import verify_trail
from MultiModalAnnotationLib.provenance.case import Case
from MultiModalAnnotationLib.provenance.review import compare_readers, consensus, majority_vote, staple
from MultiModalAnnotationLib.provenance.sampling import (
    check_sample,
    draw_sample,
    rank_cases,
    sampling_decision,
    select_sample,
)
from MultiModalAnnotationLib.provenance.versions import VersionContent
from MultiModalAnnotationLib.provenance.workflow import ReviewPolicy
from RTSSBridgeLib.errors import InputError
from Testing.test_workflow import ADMIN, QC, brain_sample, make_task, shifted


@pytest.fixture(scope="module")
def brain(sample_case: Any) -> Any:
    return brain_sample(sample_case)


def test_seeded_sample_is_reproducible_and_widens_as_a_superset() -> None:
    """R-6.9: the same seed draws the same cases whatever their order; a wider ratio keeps the
    narrower sample; ratio 0.2 of 10 cases is 2 cases."""
    ids = [f"CASE_{n:04d}" for n in range(10)]
    first = select_sample(ids, 0.2, seed=7)
    assert len(first) == 2 and first == select_sample(list(reversed(ids)), 0.2, seed=7)
    wider = select_sample(ids, 0.4, seed=7)
    assert wider[:2] == first and len(wider) == 4
    assert select_sample(ids, 0.2, seed=8) != first or rank_cases(ids, 8) != rank_cases(ids, 7)
    assert len(select_sample(ids, 1.0, seed=1)) == 10 and len(select_sample(ids[:3], 0.01, seed=1)) == 1
    with pytest.raises(InputError, match="not in"):
        select_sample(ids, 0, seed=1)
    with pytest.raises(InputError, match="twice"):
        rank_cases(["A", "A"], 1)


def test_failure_rate_widens_or_halts() -> None:
    """R-6.9: a failure rate above the limit widens the sample; on a full check it halts delivery."""
    assert sampling_decision({"A": True, "B": True}, 0.2, 0.1)["decision"] == "deliver"
    widen = sampling_decision({"A": True, "B": False}, 0.2, 0.1)
    assert widen["decision"] == "widen" and widen["next_ratio"] == pytest.approx(0.4)
    assert sampling_decision({"A": False, "B": True}, 1.0, 0.1)["decision"] == "halt"
    assert sampling_decision({"A": None, "B": True}, 0.5, 0.1)["decision"] == "wait"


def _to_qc(case: Case, document: Any, masks: Any) -> None:
    for target in ("admitted", "deidentified", "preprocessed", "annotating"):
        case.advance(ADMIN, "administrator", target)
    case.save_version("A01", "annotator", document, masks)
    case.advance("A01", "annotator", "in_review")
    case.review("R01", {"case": "accept"})
    case.advance("R01", "reviewer", "qc")


def test_batch_sampling_records_and_decides(brain: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """R-6.9: seeded sample at the task's ratio recorded in the batch and case trails; one failure
    widens the sample until the full batch is checked, then delivery halts (exit 1)."""
    document, masks, template = brain
    task_data = make_task(document, high_risk=False).to_dict()
    task_data["review"]["readers"] = 1
    task_data["qc"]["sampling_ratio"] = 0.4
    from MultiModalAnnotationLib.tasks import task_from_dict

    task = task_from_dict(task_data)
    batch = tmp_path / "batch"
    cases = {}
    for n in range(5):
        case = Case.create(batch / f"c{n}", f"CASE_{n:04d}", task, template, ADMIN)
        _to_qc(case, document, masks)
        cases[f"CASE_{n:04d}"] = case
    drawn = draw_sample(batch, QC, seed=11)["details"]
    assert drawn["ratio"] == 0.4 and len(drawn["selected"]) == 2
    assert drawn["selected"] == select_sample(sorted(cases), 0.4, 11)
    bad = drawn["selected"][0]
    for case_id in drawn["selected"]:
        cases[case_id].qc_result(QC, case_id != bad, reason=None if case_id != bad else "contour leaks into skull")
    assert cases[bad].state().sampling[0]["rank"] == 1
    decision = check_sample(batch, QC)["details"]
    assert decision["decision"] == "widen" and decision["next_ratio"] == pytest.approx(0.8)
    wider = draw_sample(batch, QC, seed=11)["details"]
    assert wider["selected"][:2] == drawn["selected"] and len(wider["selected"]) == 4
    assert check_sample(batch, QC)["details"]["decision"] == "wait"
    for case_id in wider["added"]:
        cases[case_id].qc_result(QC, True)
    assert check_sample(batch, QC)["details"]["decision"] == "widen"
    assert main(["case", "sample", str(batch), "--actor", QC, "--seed", "11"]) == 0
    last = [c for c in cases if c not in wider["selected"]]
    cases[last[0]].qc_result(QC, True)
    capsys.readouterr()
    assert main(["case", "sample-check", str(batch), "--actor", QC]) == 1
    assert capsys.readouterr().out.startswith("halt: failure rate 20.0%")
    trail = verify_trail(batch / "sampling.jsonl")
    assert trail.ok and [e["action"] for e in trail.events].count("sampled") == 3
    assert all(verify_trail(c.trail.path).ok for c in cases.values())
    with pytest.raises(InputError, match="no case folder"):
        draw_sample(tmp_path, QC, seed=1)


def _content(document: Any, masks: Dict[str, np.ndarray], name: str) -> VersionContent:
    return VersionContent(name * 64, document, masks, {})


def test_consensus_majority_and_staple(brain: Any) -> None:
    """R-6.8: three readers side by side; majority vote keeps voxels of 2 of 3; STAPLE (SimpleITK)
    returns a binary estimate with per-reader sensitivity; comparisons name the disagreeing pair."""
    document, masks, _ = brain
    readers = {"A01": masks, "A02": shifted(masks, "METASTASIS_01", 1), "A03": shifted(masks, "METASTASIS_01", 6)}
    contents = {r: _content(document, m, r[-1]) for r, m in readers.items()}
    doc, fused, notes = consensus(contents, "majority")
    stack = [m["METASTASIS_01"] for m in readers.values()]
    assert np.array_equal(fused["METASTASIS_01"], np.sum(stack, axis=0) >= 2)
    assert np.array_equal(majority_vote(stack[:2]), stack[0] & stack[1])
    assert doc.metadata["annotator"] == "consensus-majority" and notes["readers"] == ["A01", "A02", "A03"]
    _, fused_staple, notes_staple = consensus(contents, "staple")
    estimate = notes_staple["staple"]["METASTASIS_01"]
    assert len(estimate["sensitivity"]) == 3 and fused_staple["METASTASIS_01"].dtype == bool
    assert fused_staple["METASTASIS_01"].sum() > 0
    mask, info = staple([masks["METASTASIS_02"]] * 3)
    assert np.array_equal(mask, masks["METASTASIS_02"]) and info["threshold"] == 0.5
    result = compare_readers(contents, ReviewPolicy(dice_threshold=0.75))
    assert result["disagreement"]
    assert any(r.startswith("METASTASIS_01: Dice") and "A03" in r for r in result["reasons"])
    assert not any("A01 and A02" in r for r in result["reasons"])
    with pytest.raises(InputError, match="two or more"):
        consensus({"A01": contents["A01"]}, "majority")
    with pytest.raises(InputError, match="majority, staple"):
        consensus(contents, "mean")
    assert json.dumps(notes)  # plain JSON for the trail
