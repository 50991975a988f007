"""The combined verdict per case and per batch (R-10.2.3): "fit for intended use", "fit under
limited conditions" or "needs rework", with the reasons, strengths and weaknesses listed.

Case rules (thresholds from :class:`~QCMetricsLib.config.VerdictRules`):

* **needs rework** when a rule finding is an error, a label's Dice is below ``rework_dice``, more
  than ``max_flagged_fraction`` of the labels are in special review, or the detection recall is
  below ``rework_detection_recall``;
* **fit under limited conditions** when any label is in special review (Dice below the task's
  threshold, or HD95 above ``max_hd95_mm``), a finding is a warning, or the detection recall or
  precision is below ``min_detection_recall``;
* otherwise **fit for intended use**.

Batch rules: needs rework when more than ``rework_case_fraction`` of the cases need rework or a
case could not be evaluated; limited when more than ``limited_case_fraction`` are not fit, or a
systematic bias is seen (R-6.9: the test volume is larger, or smaller, than the reference in at
least 80 % of at least 10 label comparisons); otherwise fit.
"""

from __future__ import annotations

from typing import Any, Dict, List

from .config import QCConfig

STATUSES = ("fit", "limited", "rework")
TITLES = {
    "fit": ("fit for intended use", "符合预期用途"),
    "limited": ("fit under limited conditions", "有限条件下可用"),
    "rework": ("needs rework", "需返工"),
}


def _verdict(status: str, reasons: List[str], strengths: List[str], weaknesses: List[str],
             extra: Dict[str, Any]) -> Dict[str, Any]:
    en, zh = TITLES[status]
    return {"status": status, "title": en, "title_zh": zh, "reasons": reasons, "strengths": strengths,
            "weaknesses": weaknesses, **extra}


def case_verdict(labels: List[Dict[str, Any]], detection: Dict[str, Any], findings: List[Dict[str, Any]],
                 config: QCConfig) -> Dict[str, Any]:
    rules = config.verdict
    rework: List[str] = []
    limited: List[str] = []
    strengths: List[str] = []
    flagged = [lab["label"] for lab in labels if lab["special_review"]]
    for lab in labels:
        dice = lab.get("dice")
        if dice is not None and dice < rules.rework_dice:
            rework.append(f"{lab['label']}: Dice {dice:.3f} below the rework limit {rules.rework_dice:g}")
        elif lab["special_review"]:
            limited.append(f"{lab['label']}: special review ({'; '.join(lab['review_reasons'])})")
    if labels and len(flagged) / len(labels) > rules.max_flagged_fraction:
        rework.append(f"{len(flagged)} of {len(labels)} labels in special review (more than "
                      f"{rules.max_flagged_fraction:.0%})")
    for f in findings:
        text = f"{f['rule']}: {f['message']}"
        if f["severity"] == "error":
            rework.append(text)
        elif f["severity"] == "warning":
            limited.append(text)
    recall = detection.get("detection_recall")
    precision = detection.get("detection_precision")
    if detection.get("n_reference_objects", 0) or detection.get("n_test_objects", 0):
        if recall is not None and recall < rules.rework_detection_recall:
            rework.append(f"detection recall {recall:.2f} below {rules.rework_detection_recall:g} "
                          f"({detection.get('missed', 0)} reference objects missed)")
        elif recall is not None and recall < rules.min_detection_recall:
            limited.append(f"detection recall {recall:.2f} below {rules.min_detection_recall:g}")
        if precision is not None and precision < rules.min_detection_recall:
            limited.append(f"detection precision {precision:.2f} below {rules.min_detection_recall:g} "
                           f"({detection.get('false_positive_objects', 0)} extra objects)")
        if recall is not None and recall >= rules.min_detection_recall and \
                precision is not None and precision >= rules.min_detection_recall:
            strengths.append(f"objects detected: recall {recall:.2f}, precision {precision:.2f}")
    good = [lab for lab in labels if not lab["special_review"]]
    if good:
        worst = min(lab["dice"] for lab in good)
        strengths.append(f"{len(good)} of {len(labels)} labels agree (Dice ≥ {config.dice_threshold:g}; "
                         f"lowest {worst:.3f})")
    if not labels:
        rework.append("no labels to compare")
    status = "rework" if rework else "limited" if limited else "fit"
    reasons = rework + limited if status != "fit" else ["every label and rule within the task's thresholds"]
    return _verdict(status, reasons, strengths, rework + limited, {"flagged_labels": flagged})


def batch_verdict(cases: List[Dict[str, Any]], config: QCConfig) -> Dict[str, Any]:
    """``cases``: per-case summaries with ``status`` ("fit", "limited", "rework" or "error") and
    ``volume_signs`` (+1/-1/0 per label: sign of test − reference volume)."""
    rules = config.verdict
    n = len(cases)
    counts = {s: sum(1 for c in cases if c["status"] == s) for s in (*STATUSES, "error")}
    rework: List[str] = []
    limited: List[str] = []
    strengths: List[str] = []
    if n == 0:
        rework.append("no cases")
    if counts["error"]:
        rework.append(f"{counts['error']} case(s) could not be evaluated")
    if n and counts["rework"] / n > rules.rework_case_fraction:
        rework.append(f"{counts['rework']} of {n} cases need rework (more than {rules.rework_case_fraction:.0%})")
    elif counts["rework"]:
        limited.append(f"{counts['rework']} of {n} cases need rework")
    not_fit = counts["rework"] + counts["limited"]
    if n and not_fit / n > rules.limited_case_fraction and counts["limited"]:
        limited.append(f"{counts['limited']} of {n} cases fit only under limited conditions")
    signs = [s for c in cases for s in c.get("volume_signs", []) if s]
    if len(signs) >= 10:
        larger = sum(1 for s in signs if s > 0) / len(signs)
        if larger >= 0.8 or larger <= 0.2:
            word = "larger" if larger >= 0.8 else "smaller"
            limited.append(f"systematic bias: the test volume is {word} than the reference in "
                           f"{max(larger, 1 - larger):.0%} of {len(signs)} label comparisons (R-6.9: widen the "
                           "sample or halt delivery)")
    if counts["fit"]:
        strengths.append(f"{counts['fit']} of {n} cases fit for intended use")
    status = "rework" if rework else "limited" if limited else "fit"
    reasons = rework + limited if status != "fit" else ["every case fit for intended use"]
    return _verdict(status, reasons, strengths, rework + limited, {"counts": counts})
