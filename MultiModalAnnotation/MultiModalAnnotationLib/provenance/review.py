"""Review, multi-reader comparison, consensus and model-assisted provenance (R-6.7, R-6.8, R-9.1.2).

* **Opinions** (:data:`OPINIONS`): accept, request_change, reject - per annotation (or for the
  whole ``case``), each with an optional comment; a review's overall opinion is the most severe
  of its opinions (reject > request_change > accept).
* **Readers compared** (:func:`compare_readers`): for every pair of readers, the Dice of every
  mask annotation (each instance on its own; QCMetrics' kernels), the score differences of the
  attributes both gave the same annotation (integers and numbers by value, enum options by their
  points, other enums as equal or not), and over all paired scores Cohen's linearly weighted
  kappa (two readers) or Fleiss' kappa (three or more; QCMetrics' agreement module). A
  disagreement is a Dice below the task's threshold (``qc.dice_threshold``), a score difference
  above ``review.score_difference``, a categorical mismatch, or a kappa below
  ``qc.kappa_threshold`` (when at least :data:`MIN_KAPPA_ITEMS` scores are paired).
* **Consensus proposals** (:func:`consensus`): per mask annotation, majority vote (a voxel is in
  when more than half of the readers have it: with two readers that is their intersection) and
  STAPLE (SimpleITK's ``STAPLEImageFilter``, Warfield 2004: the voxels whose estimated true
  probability is at least 0.5, with each reader's sensitivity and specificity reported);
  attributes by majority, with ties listed as unresolved for the arbiter.
* **AI proposal -> human result** (:func:`ai_deviation`): QCMetrics' AI-vs-human deviation
  (boundary shift, missed-region and over-annotation rates, regions matched) of every mask the
  human kept from the proposal.
* **Uncertainty categories** (R-6.7.3): :data:`UNCERTAINTY_CATEGORIES`.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from RTSSBridgeLib.errors import InputError

from ..documents import Annotation, AnnotationDocument
from ..templates import LabelTemplate
from .versions import VersionContent
from .workflow import ReviewPolicy

OPINIONS = ("accept", "request_change", "reject")
UNCERTAINTY_CATEGORIES = ("unclear_boundary", "artefact", "rare_finding", "tool_problem")
CASE_TARGET = "case"
CONSENSUS_METHODS = ("majority", "staple")
#: Fewest paired scores for which a kappa is computed and judged.
MIN_KAPPA_ITEMS = 5
STAPLE_THRESHOLD = 0.5


def overall_opinion(opinions: Sequence[str]) -> str:
    for level in ("reject", "request_change"):
        if level in opinions:
            return level
    return "accept"


def check_opinion(value: str, where: str) -> str:
    if value not in OPINIONS:
        raise InputError(f"{value!r} is not one of {', '.join(OPINIONS)}", field=where)
    return value


# --------------------------------------------------------------------------- readers
def _score(template: Optional[LabelTemplate], item: Annotation, key: str, value: Any) -> Tuple[str, Any]:
    """("number", float) for a score, ("category", value) for a categorical attribute."""
    if isinstance(value, bool):
        return "category", value
    if isinstance(value, (int, float)):
        return "number", float(value)
    if template is not None and isinstance(value, str):
        label = template.get(item.label_code)
        definition = label.attribute(key) if label is not None else None
        option = definition.option(value) if definition is not None and definition.value_type == "enum" else None
        if option is not None and option.points is not None:
            return "number", float(option.points)
    return "category", value


def _pair(a: VersionContent, b: VersionContent, template: Optional[LabelTemplate],
          policy: ReviewPolicy) -> Dict[str, Any]:
    from QCMetricsLib.kernels import pair_statistics
    from QCMetricsLib.metrics import MetricOptions, metric

    g = a.document.image.geometry
    codes = {item.id: item.label_code for item in (*a.document.annotations, *b.document.annotations)}
    labels = []
    # per annotation (instance), not per label: a lesion outlined elsewhere must not hide among
    # the other lesions of the same label
    for ident in sorted(set(a.masks) | set(b.masks)):
        ma = a.masks.get(ident, np.zeros(g.array_shape, bool))
        mb = b.masks.get(ident, np.zeros(g.array_shape, bool))
        stats = pair_statistics(ma, mb, g.spacing_mm, g.direction_matrix, with_surfaces=False)
        value = metric("dice").compute(stats, MetricOptions())
        labels.append({"annotation": ident, "label": codes[ident], "dice": value.json_value(),
                       "reason": value.reason or None,
                       "volume_a_ml": metric("volume_ref_ml").compute(stats, MetricOptions()).json_value(),
                       "volume_b_ml": metric("volume_test_ml").compute(stats, MetricOptions()).json_value()})
    items_b = {item.id: item for item in b.document.annotations}
    scores = []
    for item in a.document.annotations:
        other = items_b.get(item.id)
        if other is None:
            continue
        for key, value in sorted(item.attributes.items()):
            if key not in other.attributes:
                continue
            kind_a, score_a = _score(template, item, key, value)
            kind_b, score_b = _score(template, other, key, other.attributes[key])
            row: Dict[str, Any] = {"annotation": item.id, "attribute": key, "a": value, "b": other.attributes[key]}
            if kind_a == kind_b == "number":
                row["difference"] = abs(score_a - score_b)
            else:
                row["difference"] = None
                row["equal"] = value == other.attributes[key]
            scores.append(row)
    return {"labels": labels, "scores": scores}


def compare_readers(contents: Mapping[str, VersionContent], policy: ReviewPolicy,
                    template: Optional[LabelTemplate] = None) -> Dict[str, Any]:
    """Inter-reader comparison of the readers' versions (``reader -> content``); see the module
    docstring. ``disagreement`` is True when any criterion is broken, with one reason per line."""
    from QCMetricsLib.agreement import cohen_kappa, fleiss_kappa

    readers = sorted(contents)
    pairs = []
    reasons: List[str] = []
    for ra, rb in itertools.combinations(readers, 2):
        result = _pair(contents[ra], contents[rb], template, policy)
        for row in result["labels"]:
            if row["dice"] is not None and row["dice"] < policy.dice_threshold:
                reasons.append(f"{row['annotation']}: Dice {row['dice']:.3f} between {ra} and {rb} is below "
                               f"{policy.dice_threshold:g}")
        for row in result["scores"]:
            if row["difference"] is not None and row["difference"] > policy.score_difference:
                reasons.append(f"{row['annotation']}.{row['attribute']}: {ra} {row['a']!r}, {rb} {row['b']!r} "
                               f"(difference {row['difference']:g} > {policy.score_difference:g})")
            elif row["difference"] is None and not row["equal"]:
                reasons.append(f"{row['annotation']}.{row['attribute']}: {ra} {row['a']!r}, {rb} {row['b']!r}")
        pairs.append({"readers": [ra, rb], **result})
    kappa: Optional[Dict[str, Any]] = None
    numeric = _paired_numeric_scores(contents, template, readers)
    if len(numeric) >= MIN_KAPPA_ITEMS:
        if len(readers) == 2:
            values = sorted({v for row in numeric for v in row})
            kappa = cohen_kappa([r[0] for r in numeric], [r[1] for r in numeric], weights="linear",
                                categories=values).to_dict()
        else:
            kappa = fleiss_kappa(numeric).to_dict()
        if (policy.kappa_threshold is not None and kappa["value"] is not None
                and kappa["value"] < policy.kappa_threshold):
            reasons.append(f"score agreement {kappa['statistic']} {kappa['value']:.3f} over {kappa['n']} scores is "
                           f"below {policy.kappa_threshold:g}")
    return {"readers": readers, "versions": {r: contents[r].tree for r in readers}, "pairs": pairs, "kappa": kappa,
            "thresholds": {"dice": policy.dice_threshold, "score_difference": policy.score_difference,
                           "kappa": policy.kappa_threshold},
            "disagreement": bool(reasons), "reasons": reasons}


def _paired_numeric_scores(contents: Mapping[str, VersionContent], template: Optional[LabelTemplate],
                           readers: Sequence[str]) -> List[List[float]]:
    rows = []
    by_reader = {r: {item.id: item for item in contents[r].document.annotations} for r in readers}
    first = by_reader[readers[0]]
    for ident, item in first.items():
        for key in sorted(item.attributes):
            values = []
            for reader in readers:
                other = by_reader[reader].get(ident)
                if other is None or key not in other.attributes:
                    break
                kind, score = _score(template, other, key, other.attributes[key])
                if kind != "number":
                    break
                values.append(score)
            else:
                rows.append(values)
    return rows


# --------------------------------------------------------------------------- consensus
def staple(masks: Sequence[np.ndarray]) -> Tuple[np.ndarray, Dict[str, Any]]:
    """STAPLE of binary masks (SimpleITK): the voxels with probability >= 0.5, and the estimates."""
    import SimpleITK as sitk

    images = [sitk.GetImageFromArray(np.ascontiguousarray(m.astype(np.uint8))) for m in masks]
    staple_filter = sitk.STAPLEImageFilter()
    staple_filter.SetForegroundValue(1.0)
    probability = sitk.GetArrayFromImage(staple_filter.Execute(images))
    return probability >= STAPLE_THRESHOLD, {
        "sensitivity": [float(v) for v in staple_filter.GetSensitivity()],
        "specificity": [float(v) for v in staple_filter.GetSpecificity()],
        "iterations": int(staple_filter.GetElapsedIterations()), "threshold": STAPLE_THRESHOLD}


def majority_vote(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Voxels marked by more than half of the readers."""
    votes = np.sum([m.astype(np.uint8) for m in masks], axis=0)
    return votes * 2 > len(masks)


def consensus(contents: Mapping[str, VersionContent], method: str
              ) -> Tuple[AnnotationDocument, Dict[str, np.ndarray], Dict[str, Any]]:
    """A consensus proposal of the readers' versions: (document, masks, notes)."""
    if method not in CONSENSUS_METHODS:
        raise InputError(f"{method!r} is not one of {', '.join(CONSENSUS_METHODS)}", field="method")
    readers = sorted(contents)
    if len(readers) < 2:
        raise InputError(f"a consensus needs two or more readers, got {len(readers)}", field="readers")
    g = contents[readers[0]].document.image.geometry
    order: List[str] = []
    items: Dict[str, List[Tuple[str, Annotation]]] = {}
    for reader in readers:
        for item in contents[reader].document.annotations:
            if item.id not in items:
                order.append(item.id)
            items.setdefault(item.id, []).append((reader, item))
    annotations: List[Annotation] = []
    masks: Dict[str, np.ndarray] = {}
    unresolved: List[str] = []
    estimates: Dict[str, Any] = {}
    dropped: List[str] = []
    for ident in order:
        holders = items[ident]
        base = holders[0][1]
        attributes: Dict[str, Any] = {}
        keys = sorted({k for _, item in holders for k in item.attributes})
        for key in keys:
            values = [item.attributes[key] for _, item in holders if key in item.attributes]
            counts = Counter(repr(v) for v in values)
            best, count = counts.most_common(1)[0]
            chosen = next(v for v in values if repr(v) == best)
            if count * 2 <= len(readers) and len(counts) > 1:
                unresolved.append(f"{ident}.{key}: " + ", ".join(f"{r} {item.attributes[key]!r}" for r, item in holders
                                                                   if key in item.attributes))
                chosen = base.attributes.get(key, values[0])
            attributes[key] = chosen
        if base.type == "mask":
            stack = [contents[r].masks.get(ident, np.zeros(g.array_shape, bool)) for r in readers]
            if method == "majority":
                fused = majority_vote(stack)
            else:
                fused, estimate = staple(stack)
                estimates[ident] = {"readers": readers, **estimate}
            if not fused.any():
                dropped.append(ident)
                continue
            masks[ident] = fused
        data = dict(base.data)
        if attributes:
            data["attributes"] = attributes
        elif "attributes" in data:
            data.pop("attributes")
        annotations.append(Annotation(base.id, base.category, base.label_code, base.type, data, base.instance,
                                      any(item.uncertain for _, item in holders)))
    first = contents[readers[0]].document
    metadata = dict(first.metadata)
    metadata["annotator"] = f"consensus-{method}"
    metadata.pop("reviewer", None)
    document = first.replace(annotations=annotations, metadata=metadata)
    notes: Dict[str, Any] = {"method": method, "readers": readers, "unresolved": unresolved, "dropped_empty": dropped}
    if estimates:
        notes["staple"] = estimates
    return document, masks, notes


# --------------------------------------------------------------------------- model-assisted
def ai_deviation(proposal: VersionContent, human: VersionContent) -> Dict[str, Any]:
    """QCMetrics' AI-vs-human deviation of every mask annotation the proposal and the human result
    share (reference = human-confirmed, test = AI proposal), plus those only one of them has."""
    from QCMetricsLib.compare import compare_volumes, labeled_volume_from_arrays
    from QCMetricsLib.config import QCConfig

    g = human.document.image.geometry
    rows = []
    config = QCConfig(comparison="ai-vs-human")
    for ident in sorted(set(human.masks) | set(proposal.masks)):
        ref = human.masks.get(ident, np.zeros(g.array_shape, bool)).astype(np.uint8)
        test = proposal.masks.get(ident, np.zeros(g.array_shape, bool)).astype(np.uint8)
        result = compare_volumes(labeled_volume_from_arrays(ref, g, {1: ident}),
                                 labeled_volume_from_arrays(test, g, {1: ident}), config, case_id=ident,
                                 with_figures=False).result
        deviation = result.get("deviation") or {}
        label = (deviation.get("labels") or [{}])[0]
        rows.append({"annotation": ident, "in_proposal": ident in proposal.masks, "in_result": ident in human.masks,
                     "boundary_shift_mm": label.get("boundary_shift_mm"),
                     "boundary_shift_hd95_mm": label.get("boundary_shift_hd95_mm"),
                     "missed_region_rate": label.get("missed_region_rate"),
                     "over_annotation_rate": label.get("over_annotation_rate"),
                     "regions_matched": label.get("regions_matched", 0),
                     "regions_missed_by_ai": label.get("regions_missed_by_ai", 0),
                     "regions_removed_by_human": label.get("regions_removed_by_human", 0),
                     "dice": next((e["dice"] for e in result["labels"]), None)})
    shifts = [r["boundary_shift_mm"] for r in rows if r["boundary_shift_mm"] is not None]
    return {"definition": "reference = human-confirmed result, test = AI proposal (QCMetrics ai-vs-human)",
            "boundary_shift_mm": float(np.mean(shifts)) if shifts else None,
            "annotations_added_by_human": [r["annotation"] for r in rows if not r["in_proposal"]],
            "annotations_removed_by_human": [r["annotation"] for r in rows if not r["in_result"]],
            "labels": rows}


def finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
