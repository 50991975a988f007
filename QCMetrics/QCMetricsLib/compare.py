"""Compare a reference and a test annotation of one case (R-9.1, R-9.1.2, R-9.2, R-10.2, R-10.2.3).

:func:`compare_volumes` matches the labels (template code, then label value, then ROI name),
resamples the test onto the reference grid when the grids differ (nearest neighbour in physical
space, stated), computes every registry metric per label, detects and matches lesion objects,
adds the AI-vs-human deviation when asked, runs the rule checks and gives the verdict. The result
is a JSON-ready dict (``Resources/schemas/qc-case.schema.json``) plus what the report draws.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from RTSSBridgeLib.labels import LabelSet, normalise_roi_name

from . import __version__
from .config import QCConfig, lesion_like
from .detection import DetectionOptions, detect_objects, detection_summary
from .kernels import Box, PairStatistics, box_voxels, pair_statistics_from_getters, union_box
from .metrics import PAIR_METRICS, MetricValue, compute_pair_metrics
from .readers import LabeledVolume, LabelEntry, image_diagonal_mm
from .resample import resample_volume
from .rules import Finding, containment_fraction_outside, matches
from .verdict import case_verdict

SCHEMA_ID = "https://multimodalannotation.github.io/schemas/qc-case/v1"
HISTOGRAM_BINS = 20


@dataclass
class LabelPair:
    """A reference label and its test counterpart (either may be None)."""

    ref: Optional[LabelEntry]
    test: Optional[LabelEntry]
    code: Optional[str]
    matched_by: str  # "code", "value", "name" or "" (unmatched)

    @property
    def display(self) -> str:
        entry = self.ref or self.test
        assert entry is not None
        return self.code or entry.name


@dataclass
class Figure:
    """What the report draws for one label: the worst-disagreement slice and its outlines."""

    label: str
    slice_k: int
    rows: slice
    cols: slice
    ref2d: np.ndarray
    test2d: np.ndarray
    image2d: Optional[np.ndarray]
    pixel_mm: Tuple[float, float]  # (row spacing, column spacing)


@dataclass
class CaseComparison:
    """The JSON result and the figures of one comparison."""

    result: Dict[str, Any]
    figures: List[Figure] = field(default_factory=list)
    histograms: Dict[str, Dict[str, Any]] = field(default_factory=dict)


def _code_of(entry: LabelEntry, volume: LabeledVolume, label_set: Optional[LabelSet]) -> Optional[str]:
    if entry.code:
        return entry.code
    if label_set is None:
        return None
    info = label_set.map_name(entry.name)
    if info is None and volume.values_are_codes:
        info = label_set.by_value(entry.value)
    return info.code if info is not None else None


def match_labels(ref: LabeledVolume, test: LabeledVolume, label_set: Optional[LabelSet] = None) -> List[LabelPair]:
    """Pair labels by template code, then by label value (when both sides' values are template
    values), then by normalised ROI name; unpaired labels are returned alone."""
    ref_codes = {e.value: _code_of(e, ref, label_set) for e in ref.labels}
    test_codes = {e.value: _code_of(e, test, label_set) for e in test.labels}
    free_test = {e.value: e for e in test.labels}
    pairs: List[LabelPair] = []
    pending: List[LabelEntry] = []
    for e in ref.labels:
        code = ref_codes[e.value]
        hit = next((t for t in free_test.values() if code and test_codes[t.value] == code), None)
        if hit is not None:
            pairs.append(LabelPair(e, hit, code, "code"))
            del free_test[hit.value]
        else:
            pending.append(e)
    still: List[LabelEntry] = []
    for e in pending:
        t = free_test.get(e.value)
        code_conflict = t is not None and ref_codes[e.value] and test_codes[t.value] and \
            ref_codes[e.value] != test_codes[t.value]
        if t is not None and ref.values_are_codes and test.values_are_codes and not code_conflict:
            pairs.append(LabelPair(e, t, ref_codes[e.value] or test_codes[t.value], "value"))
            del free_test[t.value]
        else:
            still.append(e)
    for e in still:
        name = normalise_roi_name(e.name)
        t = next((x for x in free_test.values() if normalise_roi_name(x.name) == name), None)
        if t is not None:
            pairs.append(LabelPair(e, t, ref_codes[e.value] or test_codes[t.value], "name"))
            del free_test[t.value]
        else:
            pairs.append(LabelPair(e, None, ref_codes[e.value], ""))
    for t in free_test.values():
        pairs.append(LabelPair(None, t, test_codes[t.value], ""))
    return pairs


def _empty_getter(s: Box) -> np.ndarray:
    return np.zeros([x.stop - x.start for x in s], dtype=bool)


def _pair_stats(pair: LabelPair, ref: LabeledVolume, test: LabeledVolume) -> Tuple[PairStatistics, Any, Any]:
    get_ref = ref.getter(pair.ref.value) if pair.ref else _empty_getter
    get_test = test.getter(pair.test.value) if pair.test else _empty_getter
    box = union_box(ref.box(pair.ref.value) if pair.ref else None, test.box(pair.test.value) if pair.test else None)
    n_fg = (ref.count(pair.ref.value) if pair.ref else 0) + (test.count(pair.test.value) if pair.test else 0)
    linear = _linear(ref)
    stats = pair_statistics_from_getters(get_ref, get_test, ref.geometry.array_shape, box, linear,
                                         n_foreground=n_fg)
    return stats, get_ref, get_test


def _linear(volume: LabeledVolume) -> np.ndarray:
    from .kernels import index_to_mm_matrix

    return index_to_mm_matrix(volume.geometry.spacing_mm, volume.geometry.direction_matrix)


def _set_domain(stats: PairStatistics, domain: str, box: Optional[Box], body: Optional[np.ndarray],
                get_ref: Any, get_test: Any) -> None:
    c = stats.counts
    if domain == "image":
        stats.domain_voxels = c.image_voxels
    elif domain == "bbox":
        stats.domain_voxels = max(box_voxels(box), c.union)
    else:
        assert body is not None
        inside = 0
        if box is not None:
            inside = int(np.count_nonzero(body[box] & (get_ref(box) | get_test(box))))
        stats.domain_voxels = int(np.count_nonzero(body)) - inside + c.union
    stats.domain = domain
    stats.tn = max(stats.domain_voxels - c.union, 0)


def _histogram(stats: PairStatistics) -> Dict[str, Any]:
    s = stats.surfaces
    if s is None or (s.n_ref_surface == 0 and s.n_test_surface == 0):
        return {"edges_mm": [], "ref_to_test": [], "test_to_ref": []}
    values = np.concatenate([s.ref_to_test, s.test_to_ref])
    values = values[np.isfinite(values)]
    top = float(values.max()) if values.size else 1.0
    edges = np.linspace(0.0, max(top, 1e-6), HISTOGRAM_BINS + 1)
    a = np.histogram(s.ref_to_test[np.isfinite(s.ref_to_test)], bins=edges)[0]
    b = np.histogram(s.test_to_ref[np.isfinite(s.test_to_ref)], bins=edges)[0]
    return {"edges_mm": [float(e) for e in edges], "ref_to_test": a.tolist(), "test_to_ref": b.tolist()}


def _figure(label: str, box: Optional[Box], get_ref: Any, get_test: Any, volume: LabeledVolume,
            image: Optional[np.ndarray]) -> Optional[Figure]:
    if box is None:
        return None
    r = get_ref(box)
    t = get_test(box)
    disagreement = (r ^ t).reshape(r.shape[0], -1).sum(axis=1)
    if disagreement.max() > 0:
        k_local = int(np.argmax(disagreement))
    else:
        k_local = int(np.argmax(r.reshape(r.shape[0], -1).sum(axis=1)))
    k = box[0].start + k_local
    shape = volume.geometry.array_shape
    margin = 8
    rows = slice(max(box[1].start - margin, 0), min(box[1].stop + margin, shape[1]))
    cols = slice(max(box[2].start - margin, 0), min(box[2].stop + margin, shape[2]))
    region = (slice(k, k + 1), rows, cols)
    ref2d = get_ref(region)[0]
    test2d = get_test(region)[0]
    image2d = None if image is None else np.asarray(image[k, rows, cols], dtype=np.float64)
    sx, sy, _ = volume.geometry.spacing_mm
    return Figure(label, k, rows, cols, ref2d, test2d, image2d, (sy, sx))


def _review_reasons(values: Dict[str, MetricValue], config: QCConfig, missing: str) -> List[str]:
    reasons = []
    if missing:
        reasons.append(missing)
    dice = values["dice"].value
    if not missing and dice < config.dice_threshold:
        reasons.append(f"Dice {dice:.3f} < {config.dice_threshold:g}")
    limit = config.verdict.max_hd95_mm
    hd95 = values["hausdorff95_mm"].value
    if limit is not None and not math.isnan(hd95) and hd95 > limit:
        reasons.append(f"HD95 {hd95:.2f} mm > {limit:g} mm")
    return reasons


def _lps(volume: LabeledVolume, kji: Optional[Tuple[int, ...]]) -> Optional[List[float]]:
    if kji is None:
        return None
    k, j, i = kji
    return [float(v) for v in volume.geometry.ijk_to_lps([i, j, k])]


def compare_volumes(ref: LabeledVolume, test: LabeledVolume, config: Optional[QCConfig] = None, *,
                    label_set: Optional[LabelSet] = None, case_id: str = "case",
                    body_mask: Optional[np.ndarray] = None, documents: Optional[List[Dict[str, Any]]] = None,
                    with_figures: bool = True) -> CaseComparison:
    """Compare ``test`` with ``ref`` and return the result (JSON-ready) and the report figures."""
    cfg = config or QCConfig()
    started = time.monotonic()
    findings: List[Finding] = []
    resampled = False
    test_on_ref = resample_volume(test, ref.geometry)
    if test_on_ref is not test:
        resampled = True
        findings.append(Finding("SAME_GRID", "info", "the test was on another grid and was resampled onto the "
                                "reference grid in physical space (nearest neighbour)", side="test"))
    if cfg.domain == "mask":
        if body_mask is None:
            raise ValueError("domain 'mask' needs a body mask")
        if tuple(body_mask.shape) != ref.geometry.array_shape:
            raise ValueError(f"body mask shape {list(body_mask.shape)} differs from the reference grid")
    body = None if body_mask is None else np.asarray(body_mask, dtype=bool)
    pairs = match_labels(ref, test_on_ref, label_set)
    options = cfg.metric_options
    labels: List[Dict[str, Any]] = []
    figures: List[Figure] = []
    histograms: Dict[str, Dict[str, Any]] = {}
    per_label_masks: Dict[str, Tuple[Any, Any]] = {}
    image = ref.image if ref.image is not None else test_on_ref.image
    for pair in pairs:
        stats, get_ref, get_test = _pair_stats(pair, ref, test_on_ref)
        _set_domain(stats, cfg.domain, stats.counts.box, body, get_ref, get_test)
        values = compute_pair_metrics(stats, options)
        missing = ""
        if pair.ref is not None and pair.test is None:
            missing = "missing in the test"
            findings.append(Finding("MAPPING_COMPLETE", "error", f"reference label {pair.display} has no test "
                                    "counterpart (missing object)", pair.display, "test"))
        elif pair.ref is None:
            missing = "not in the reference"
            findings.append(Finding("MAPPING_COMPLETE", "warning", f"test label {pair.display} has no reference "
                                    "counterpart (extra object)", pair.display, "test"))
        for side, side_entry, vol in (("reference", pair.ref, ref), ("test", pair.test, test_on_ref)):
            if side_entry is not None and vol.count(side_entry.value) == 0:
                findings.append(Finding("EMPTY_LABEL", "warning", f"{side} label {side_entry.name} has no voxel",
                                        pair.display, side))
        if label_set is not None and pair.code is None:
            findings.append(Finding("CODE_IN_TEMPLATE", "error", f"label {pair.display} maps to no code of template "
                                    f"{label_set.template_id}", pair.display))
        reasons = _review_reasons(values, cfg, missing)
        s = stats.surfaces
        entry: Dict[str, Any] = {
            "label": pair.display,
            "code": pair.code,
            "name": (pair.ref or pair.test).name,  # type: ignore[union-attr]
            "reference_value": pair.ref.value if pair.ref else None,
            "test_value": pair.test.value if pair.test else None,
            "matched_by": pair.matched_by or None,
        }
        for m in PAIR_METRICS:
            entry[m.name] = values[m.name].json_value()
        entry.update({
            "nsd_tolerance_mm": options.nsd_tolerance_mm,
            "domain": cfg.domain,
            "domain_voxels": int(stats.domain_voxels),
            "special_review": bool(reasons),
            "review_reasons": reasons,
            "reasons": {name: v.reason for name, v in values.items() if v.reason},
            "surface": {
                "reference_voxels": s.n_ref_surface if s else 0,
                "test_voxels": s.n_test_surface if s else 0,
                "farthest_reference_lps": _lps(ref, s.ref_worst_kji if s else None),
                "farthest_test_lps": _lps(ref, s.test_worst_kji if s else None),
            },
        })
        labels.append(entry)
        histograms[pair.display] = _histogram(stats)
        per_label_masks[pair.display] = (get_ref, get_test, stats.counts.box)  # type: ignore[assignment]
        if with_figures:
            fig = _figure(pair.display, stats.counts.box, get_ref, get_test, ref, image)
            if fig is not None:
                figures.append(fig)
    # containment rules, evaluated on the test (and the reference, whose errors are the reference's own)
    for rule in cfg.containment:
        for side, vol in (("test", test_on_ref), ("reference", ref)):
            child_values = [e.value for e in vol.labels if matches(rule.child, e.code, e.name)]
            parent_values = [e.value for e in vol.labels if matches(rule.parent, e.code, e.name)]
            if not child_values or not parent_values:
                continue
            parent = _filled(vol.mask_of(parent_values))
            for value in child_values:
                e = vol.entry(value)
                outside = containment_fraction_outside(vol.mask_of([value]), parent)
                if outside > rule.max_outside_fraction:
                    findings.append(Finding("CONTAINMENT", "error" if side == "test" else "warning",
                                            f"{side} label {e.display}: {outside:.1%} of its voxels lie outside "
                                            f"{rule.parent} (allowed {rule.max_outside_fraction:.1%})",
                                            e.display, side))
    if resampled:
        lost = _voxels_lost_in_resampling(test, test_on_ref)
        if lost:
            findings.append(Finding("INSIDE_IMAGE", "error", f"{lost} test voxels lie outside the reference image "
                                    "and were lost when resampling", side="test"))
    known = [label.code for label in label_set.labels] if label_set is not None else None
    from .rules import check_document

    for doc in documents or []:
        findings += check_document(doc, known, cfg.required_attributes, cfg.traceability_fields,
                                   ref.geometry.shape)
    detection = _detection(pairs, ref, test_on_ref, cfg)
    deviation = _deviation(labels, pairs, ref, test_on_ref, cfg) if cfg.comparison == "ai-vs-human" else None
    finding_dicts = [f.to_dict() for f in findings]
    verdict = case_verdict(labels, detection, finding_dicts, cfg)
    result: Dict[str, Any] = {
        "schema": SCHEMA_ID,
        "case_id": case_id,
        "software": {"name": "MultiModalAnnotation QCMetrics", "version": __version__},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "comparison": cfg.comparison,
        "reference": _side(ref, ref),
        "test": {**_side(test, ref), "resampled": resampled},
        "resampling": "nearest neighbour onto the reference grid in physical space" if resampled else "none",
        "domain": {"name": cfg.domain, "voxels": int(labels[0]["domain_voxels"]) if labels and cfg.domain == "image"
                   else None},
        "worst_case_distance_mm": image_diagonal_mm(ref.geometry),
        "options": cfg.to_dict(),
        "labels": labels,
        "detection": detection,
        "rules": finding_dicts,
        "verdict": verdict,
        "timings": {"compare_s": time.monotonic() - started},
    }
    if deviation is not None:
        result["deviation"] = deviation
    return CaseComparison(result, figures, histograms)


def _filled(mask: np.ndarray) -> np.ndarray:
    """The parent region for containment: the parent label with its enclosed holes filled (in a
    labelmap a lesion replaces the organ voxels it lies in, leaving a hole in the organ label)."""
    from scipy import ndimage

    from .kernels import bounding_box

    box = bounding_box(mask)
    out = np.zeros(mask.shape, dtype=bool)
    if box is not None:
        out[box] = ndimage.binary_fill_holes(mask[box])
    return out


def _side(volume: LabeledVolume, ref: LabeledVolume) -> Dict[str, Any]:
    g = volume.geometry
    return {"source": os.path.basename(os.path.normpath(volume.source)), "reader": volume.reader,
            "grid": g.to_dict(), "labels": [{"value": e.value, "name": e.name, "code": e.code} for e in volume.labels],
            "notes": list(volume.notes)}


def _voxels_lost_in_resampling(original: LabeledVolume, resampled: LabeledVolume) -> int:
    """Test voxels that map outside the reference grid (their count drops by more than the
    nearest-neighbour sampling noise: counted in physical volume)."""
    lost = 0
    for e in original.labels:
        before = original.count(e.value) * original.geometry.voxel_volume_mm3
        after = resampled.count(e.value) * resampled.geometry.voxel_volume_mm3
        if before > 0 and after < 0.5 * before:
            lost += round((before - after) / original.geometry.voxel_volume_mm3)
    return lost


def _detection_values(pairs: List[LabelPair], cfg: QCConfig) -> Tuple[List[int], List[int], List[str]]:
    ref_values, test_values, names = [], [], []
    patterns = list(cfg.detection_labels)
    for p in pairs:
        entry = p.ref or p.test
        assert entry is not None
        if lesion_like(p.code or entry.code, entry.name, patterns) or \
                (p.test is not None and lesion_like(p.test.code, p.test.name, patterns)):
            names.append(p.display)
            if p.ref is not None:
                ref_values.append(p.ref.value)
            if p.test is not None:
                test_values.append(p.test.value)
    return ref_values, test_values, names


def _detection(pairs: List[LabelPair], ref: LabeledVolume, test: LabeledVolume, cfg: QCConfig) -> Dict[str, Any]:
    ref_values, test_values, names = _detection_values(pairs, cfg)
    g = ref.geometry
    if not names:
        return {"labels": [], "note": "no lesion-type labels: object detection not computed "
                "(name them with the configuration's detection.labels)",
                "options": cfg.detection.to_dict(), "n_reference_objects": 0, "n_test_objects": 0, "matched": 0,
                "missed": 0, "false_positive_objects": 0, "detection_recall": None, "detection_precision": None,
                "detection_f1": None, "mean_object_dice": None, "mean_object_hausdorff95_mm": None,
                "reasons": {}, "reference_objects": [], "test_objects": []}
    result = detect_objects(ref.mask_of(ref_values), test.mask_of(test_values), g.spacing_mm, g.direction_matrix,
                            cfg.detection, cfg.metric_options)
    summary = detection_summary(result, g.ijk_to_lps, cfg.metric_options)
    summary["labels"] = names
    return summary


def _deviation(labels: List[Dict[str, Any]], pairs: List[LabelPair], ref: LabeledVolume, test: LabeledVolume,
               cfg: QCConfig) -> Dict[str, Any]:
    """R-9.1.2 note 1: the AI proposal (test) against the human-corrected result (reference)."""
    rows = []
    g = ref.geometry
    options = DetectionOptions(criterion=cfg.detection.criterion, min_iou=cfg.detection.min_iou,
                               max_centre_distance_mm=cfg.detection.max_centre_distance_mm,
                               connectivity=cfg.detection.connectivity)
    for lab, pair in zip(labels, pairs):
        n_ref = lab["tp"] + lab["fn"]
        n_test = lab["tp"] + lab["fp"]
        objects = detect_objects(ref.mask_of([pair.ref.value]) if pair.ref else np.zeros(g.array_shape, bool),
                                 test.mask_of([pair.test.value]) if pair.test else np.zeros(g.array_shape, bool),
                                 g.spacing_mm, g.direction_matrix, options, cfg.metric_options)
        rows.append({
            "label": lab["label"],
            "boundary_shift_mm": lab["mean_surface_distance_mm"],
            "boundary_shift_hd95_mm": lab["hausdorff95_mm"],
            "missed_region_rate": lab["fn"] / n_ref if n_ref else None,
            "over_annotation_rate": lab["fp"] / n_test if n_test else None,
            "regions_matched": objects.matched,
            "regions_missed_by_ai": len(objects.missed),
            "regions_removed_by_human": len(objects.false_positives),
        })
    shifts = [r["boundary_shift_mm"] for r in rows if r["boundary_shift_mm"] is not None]
    total_ref = sum(lab["tp"] + lab["fn"] for lab in labels)
    total_test = sum(lab["tp"] + lab["fp"] for lab in labels)
    return {
        "definition": "reference = human-corrected result, test = AI proposal. boundary shift = ASSD (mm); "
                      "missed-region rate = FN / human volume; over-annotation rate = FP / AI volume; regions = "
                      "connected components matched as in detection",
        "boundary_shift_mm": float(np.mean(shifts)) if shifts else None,
        "missed_region_rate": sum(lab["fn"] for lab in labels) / total_ref if total_ref else None,
        "over_annotation_rate": sum(lab["fp"] for lab in labels) / total_test if total_test else None,
        "regions_matched": sum(r["regions_matched"] for r in rows),
        "regions_unmatched": sum(r["regions_missed_by_ai"] + r["regions_removed_by_human"] for r in rows),
        "labels": rows,
    }


def labeled_volume_from_arrays(labelmap: np.ndarray, geometry: Any, names: Optional[Dict[int, str]] = None,
                               codes: Optional[Dict[int, str]] = None, source: str = "array",
                               image: Optional[np.ndarray] = None) -> LabeledVolume:
    """A :class:`LabeledVolume` from a ``[k, j, i]`` labelmap in memory (scene adapters, demo, tests)."""
    values = [int(v) for v in np.unique(labelmap) if v != 0]  # labels present (names of absent ones are ignored)
    entries = [LabelEntry(v, (names or {}).get(v, f"label {v}"), (codes or {}).get(v)) for v in sorted(values)]
    return LabeledVolume(source, geometry, entries, labelmap=np.asarray(labelmap), reader="memory", image=image)
