"""Object-level detection (R-9.1: recall and precision of detected objects) for many small lesions.

Objects are the connected components of each mask (26-connectivity by default; 6 and 18 can be
chosen). Reference and test objects are matched one-to-one by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) over the candidate pairs allowed by the criterion:

* ``overlap``: a pair is a candidate when its IoU is above ``min_iou`` (default 0: any shared
  voxel); the assignment maximises the total IoU;
* ``centre``: a pair is a candidate when the centres of mass are at most ``max_centre_distance_mm``
  apart in physical space; the assignment minimises the total distance.

Recall = matched / reference objects, precision = matched / test objects, F1 their harmonic mean.
Every matched pair also gets its own Dice, IoU, centre distance and surface distances (HD, HD95,
ASSD) computed on the pair's bounding box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .kernels import (
    PairStatistics,
    as_mask,
    bounding_box,
    index_to_mm_matrix,
    pair_statistics_from_getters,
    union_box,
)
from .metrics import (
    BOTH_EMPTY_AGREE,
    Direction,
    EmptyPolicy,
    Metric,
    MetricOptions,
    MetricValue,
    metric,
    register,
)
from .options import CONNECTIVITY, DetectionOptions


@dataclass
class DetectedObject:
    """One connected component: its id (1-based), voxel count and centre of mass (full-image kji)."""

    side: str
    id: int
    voxels: int
    centre_kji: Tuple[float, float, float]
    box: Tuple[slice, slice, slice]
    match: Optional[int] = None
    stats: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DetectionResult:
    options: DetectionOptions
    reference: List[DetectedObject]
    test: List[DetectedObject]
    voxel_volume_mm3: float

    @property
    def n_ref(self) -> int:
        return len(self.reference)

    @property
    def n_test(self) -> int:
        return len(self.test)

    @property
    def matched(self) -> int:
        return sum(1 for o in self.reference if o.match is not None)

    @property
    def missed(self) -> List[DetectedObject]:
        return [o for o in self.reference if o.match is None]

    @property
    def false_positives(self) -> List[DetectedObject]:
        return [o for o in self.test if o.match is None]


def _components(mask: np.ndarray, options: DetectionOptions) -> Tuple[np.ndarray, int]:
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY[options.connectivity])
    labels, n = ndimage.label(mask, structure=structure)
    if options.min_object_voxels > 1 and n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < options.min_object_voxels
        small[0] = False
        if small.any():
            remap = np.zeros(n + 1, dtype=labels.dtype)
            keep = np.flatnonzero(~small[1:]) + 1
            remap[keep] = np.arange(1, keep.size + 1, dtype=labels.dtype)
            labels = remap[labels]
            n = int(keep.size)
    return labels, int(n)


def _objects(labels: np.ndarray, n: int, side: str, offset: Sequence[int]) -> List[DetectedObject]:
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    boxes = ndimage.find_objects(labels, max_label=n)
    objects = []
    for idx, box in enumerate(boxes, start=1):
        if box is None:
            continue
        sub = labels[box] == idx
        coords = np.nonzero(sub)
        centre = tuple(float(c.mean()) + s.start + o for c, s, o in zip(coords, box, offset))
        full_box = tuple(slice(s.start + o, s.stop + o) for s, o in zip(box, offset))
        objects.append(DetectedObject(side, idx, int(sizes[idx]), centre, full_box))  # type: ignore[arg-type]
    return objects


def detect_objects(ref: Any, test: Any, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
                   direction: Optional[Any] = None, options: Optional[DetectionOptions] = None,
                   metric_options: Optional[MetricOptions] = None) -> DetectionResult:
    """Find, match and measure the objects of two binary masks ``[k, j, i]`` on the same grid."""
    opts = options or DetectionOptions()
    mopts = metric_options or MetricOptions()
    r = as_mask(ref, "reference")
    t = as_mask(test, "test")
    if r.shape != t.shape:
        raise ValueError(f"reference and test masks differ in shape: {r.shape} vs {t.shape}")
    linear = index_to_mm_matrix(spacing_mm, direction)
    voxel_volume = abs(float(np.linalg.det(linear)))
    box = union_box(bounding_box(r), bounding_box(t))
    if box is None:
        return DetectionResult(opts, [], [], voxel_volume)
    offset = [s.start for s in box]
    lr, nr = _components(r[box], opts)
    lt, nt = _components(t[box], opts)
    ref_objects = _objects(lr, nr, "reference", offset)
    test_objects = _objects(lt, nt, "test", offset)
    result = DetectionResult(opts, ref_objects, test_objects, voxel_volume)
    if not ref_objects or not test_objects:
        return result
    # Intersections of every overlapping (reference, test) pair in one pass.
    both = (lr > 0) & (lt > 0)
    pair_codes = lr[both].astype(np.int64) * (nt + 1) + lt[both]
    codes, inter = np.unique(pair_codes, return_counts=True)
    intersections: Dict[Tuple[int, int], int] = {
        (int(c // (nt + 1)), int(c % (nt + 1))): int(v) for c, v in zip(codes, inter)}
    ref_index = {o.id: n for n, o in enumerate(ref_objects)}
    test_index = {o.id: n for n, o in enumerate(test_objects)}
    big = 1e12
    cost = np.full((len(ref_objects), len(test_objects)), big)
    if opts.criterion == "overlap":
        for (a, b), inter_voxels in intersections.items():
            if a not in ref_index or b not in test_index:
                continue
            ra, tb = ref_objects[ref_index[a]], test_objects[test_index[b]]
            iou = inter_voxels / (ra.voxels + tb.voxels - inter_voxels)
            if iou > opts.min_iou:
                cost[ref_index[a], test_index[b]] = -iou
    else:
        rc = np.array([o.centre_kji for o in ref_objects]) @ linear.T
        tc = np.array([o.centre_kji for o in test_objects]) @ linear.T
        distances = np.sqrt(((rc[:, None, :] - tc[None, :, :]) ** 2).sum(axis=2))
        ok = distances <= opts.max_centre_distance_mm
        cost[ok] = distances[ok]
    rows, cols = linear_sum_assignment(cost)
    shape = r.shape
    for a, b in zip(rows, cols):
        if cost[a, b] >= big:
            continue
        ro, to = ref_objects[a], test_objects[b]
        ro.match, to.match = to.id, ro.id
        inter_voxels = intersections.get((ro.id, to.id), 0)
        pair_box = union_box(ro.box, to.box)
        assert pair_box is not None
        local = tuple(slice(s.start - o, s.stop - o) for s, o in zip(pair_box, offset))  # noqa: F841
        rid, tid = ro.id, to.id

        def get_ref(s: Tuple[slice, ...], rid: int = rid) -> np.ndarray:
            return lr[tuple(slice(x.start - o, x.stop - o) for x, o in zip(s, offset))] == rid

        def get_test(s: Tuple[slice, ...], tid: int = tid) -> np.ndarray:
            return lt[tuple(slice(x.start - o, x.stop - o) for x, o in zip(s, offset))] == tid

        stats = _pair_in_box(get_ref, get_test, shape, pair_box, box, linear)
        centre_mm = float(np.linalg.norm((np.asarray(ro.centre_kji) - np.asarray(to.centre_kji)) @ linear.T))
        values = {name: metric(name).compute(stats, mopts) for name in
                  ("hausdorff_mm", "hausdorff95_mm", "mean_surface_distance_mm")}
        pair = {
            "dice": 2.0 * inter_voxels / (ro.voxels + to.voxels),
            "iou": inter_voxels / (ro.voxels + to.voxels - inter_voxels),
            "centre_distance_mm": centre_mm,
            **{k: v.json_value() for k, v in values.items()},
        }
        ro.stats = pair
        to.stats = pair
    return result


def _pair_in_box(get_ref: Any, get_test: Any, shape: Sequence[int], pair_box: Tuple[slice, ...],
                 outer: Tuple[slice, ...], linear: np.ndarray) -> PairStatistics:
    """Pair statistics of two objects; outside the union box of all objects there is background."""
    def clip(getter: Any) -> Any:
        def get(s: Tuple[slice, ...]) -> np.ndarray:
            inner = tuple(slice(max(x.start, o.start), min(x.stop, o.stop)) for x, o in zip(s, outer))
            out = np.zeros([x.stop - x.start for x in s], dtype=bool)
            if all(i.stop > i.start for i in inner):
                dst = tuple(slice(i.start - x.start, i.stop - x.start) for i, x in zip(inner, s))
                out[dst] = getter(inner)
            return out
        return get

    return pair_statistics_from_getters(clip(get_ref), clip(get_test), shape, pair_box, linear)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- registry entries
class _DetectionMetric(Metric):
    group = "detection"
    reference = "SPEC R-9.1 (object-level recall and precision); Metrics Reloaded (2024) instance matching"


@register
class DetectionRecall(_DetectionMetric):
    name = "detection_recall"
    title = "Detection recall (objects)"
    title_zh = "检出召回率（目标级）"
    definition = "matched reference objects / reference objects"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("1 (" + BOTH_EMPTY_AGREE + ")", "NaN: no reference objects", "0")

    def compute(self, d: DetectionResult, options: MetricOptions) -> MetricValue:
        if d.n_ref == 0:
            return MetricValue(1.0, BOTH_EMPTY_AGREE) if d.n_test == 0 else \
                MetricValue(float("nan"), "no reference objects: recall undefined")
        return MetricValue(d.matched / d.n_ref)


@register
class DetectionPrecision(_DetectionMetric):
    name = "detection_precision"
    title = "Detection precision (objects)"
    title_zh = "检出精确率（目标级）"
    definition = "matched test objects / test objects"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("1 (" + BOTH_EMPTY_AGREE + ")", "0", "NaN: no test objects")

    def compute(self, d: DetectionResult, options: MetricOptions) -> MetricValue:
        if d.n_test == 0:
            return MetricValue(1.0, BOTH_EMPTY_AGREE) if d.n_ref == 0 else \
                MetricValue(float("nan"), "no test objects: precision undefined")
        return MetricValue(d.matched / d.n_test)


@register
class DetectionF1(_DetectionMetric):
    name = "detection_f1"
    title = "Detection F1 (objects)"
    title_zh = "检出 F1（目标级）"
    definition = "F1 = 2·matched / (reference objects + test objects)"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("1 (" + BOTH_EMPTY_AGREE + ")", "0", "0")

    def compute(self, d: DetectionResult, options: MetricOptions) -> MetricValue:
        if d.n_ref + d.n_test == 0:
            return MetricValue(1.0, BOTH_EMPTY_AGREE)
        return MetricValue(2.0 * d.matched / (d.n_ref + d.n_test))


@register
class ObjectDice(_DetectionMetric):
    name = "mean_object_dice"
    title = "Mean Dice of matched objects"
    title_zh = "匹配目标的平均 Dice"
    definition = "mean over matched pairs of 2|R_o ∩ T_o| / (|R_o| + |T_o|)"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("NaN: no matched objects", "NaN: no matched objects", "NaN: no matched objects")

    def compute(self, d: DetectionResult, options: MetricOptions) -> MetricValue:
        values = [o.stats["dice"] for o in d.reference if o.match is not None]
        if not values:
            return MetricValue(float("nan"), "no matched objects")
        return MetricValue(float(np.mean(values)))


@register
class ObjectHausdorff95(_DetectionMetric):
    name = "mean_object_hausdorff95_mm"
    title = "Mean HD95 of matched objects"
    title_zh = "匹配目标的平均 95% Hausdorff 距离"
    unit = "mm"
    definition = "mean over matched pairs of the pair's HD95 (boundary voxels, physical space)"
    direction = Direction.LOWER
    empty_policy = EmptyPolicy("NaN: no matched objects", "NaN: no matched objects", "NaN: no matched objects")

    def compute(self, d: DetectionResult, options: MetricOptions) -> MetricValue:
        values = [o.stats["hausdorff95_mm"] for o in d.reference
                  if o.match is not None and o.stats.get("hausdorff95_mm") is not None]
        if not values:
            return MetricValue(float("nan"), "no matched objects")
        return MetricValue(float(np.mean(values)))


def detection_summary(d: DetectionResult, linear_to_lps: Optional[Any] = None,
                      metric_options: Optional[MetricOptions] = None) -> Dict[str, Any]:
    """JSON form: counts, registry metrics (with reasons) and every object.

    ``linear_to_lps`` maps a full-image (k, j, i) index to LPS mm (a callable) when the grid is known."""
    mopts = metric_options or MetricOptions()
    from .metrics import DETECTION_METRICS

    values = {m.name: m.compute(d, mopts) for m in DETECTION_METRICS}

    def obj(o: DetectedObject) -> Dict[str, Any]:
        k, j, i = o.centre_kji
        entry: Dict[str, Any] = {"id": o.id, "voxels": o.voxels, "volume_ml": o.voxels * d.voxel_volume_mm3 / 1000.0,
                                 "centre_ijk": [i, j, k], "match": o.match}
        if linear_to_lps is not None:
            entry["centre_lps"] = [float(v) for v in linear_to_lps((i, j, k))]
        entry.update(o.stats)
        return entry

    return {
        "options": d.options.to_dict(),
        "n_reference_objects": d.n_ref,
        "n_test_objects": d.n_test,
        "matched": d.matched,
        "missed": len(d.missed),
        "false_positive_objects": len(d.false_positives),
        **{name: v.json_value() for name, v in values.items()},
        "reasons": {name: v.reason for name, v in values.items() if v.reason},
        "reference_objects": [obj(o) for o in d.reference],
        "test_objects": [obj(o) for o in d.test],
    }


def f1(recall: float, precision: float) -> float:
    if math.isnan(recall) or math.isnan(precision) or recall + precision == 0:
        return float("nan")
    return 2 * recall * precision / (recall + precision)
