"""The metric registry (STYLE habit 9; R-9.1, Appendix D): every quality measure as a small class.

Each metric declares its machine ``name`` (the JSON/CSV key), a ``title`` in English and Chinese,
its ``unit``, a ``definition`` with its ``reference``, a ``direction`` (which way is better), how it
treats empty inputs (``empty_policy``) and how a batch aggregates an undefined value
(``batch_policy``). The report, the command line (``mmanno qc metrics``) and the Slicer table all
list :data:`PAIR_METRICS` / :data:`DETECTION_METRICS` in this order, with these titles and units.

Exact definitions (SPEC.md "Decisions"; Metrics Reloaded, Maier-Hein et al. 2024):

* confusion counts TP, FP, FN over the whole image; TN over a stated *domain* (whole image, union
  bounding box of the two masks, or a body mask): positives are always counted, the domain only
  decides how many negatives exist, and it is printed with every number that depends on it
  (specificity, accuracy, kappa);
* sensitivity = TP/(TP+FN) (the standard definition; Appendix D's legend swaps words);
* Conformity (Chang et al. 2009) = 1 − (FP+FN)/TP;
* surface distances between 6-connected boundary voxels, in millimetres in physical space (see
  :mod:`QCMetricsLib.kernels`); HD = the larger directed maximum; HD95 = the larger of the two
  directed 95th percentiles (``numpy.percentile``, linear interpolation, as Metrics Reloaded);
  ASSD = pooled mean of both directed distance sets; MASD = mean of the two directed means;
  NSD(τ) = share of the boundary voxels of both masks lying within τ mm of the other boundary.

What other tools compute differently (measured in ``benchmarks/bench_qc_metrics.py``): DeepMind's
``surface-distance`` weights each boundary element by its surface area (surfels between voxel
corners), so its percentiles and means differ; SimpleITK's ``HausdorffDistanceImageFilter`` uses
every foreground voxel, not only the boundary (same maximum, a different average); MONAI and
seg-metrics use the boundary but differ on edges and empty inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import numpy as np

from .kernels import PairStatistics
from .options import MetricOptions

NAN = float("nan")


class Direction(str, Enum):
    """Which way a metric is better."""

    HIGHER = "higher"
    LOWER = "lower"
    TOWARDS_ZERO = "towards zero"
    NONE = "neither"  # counts and volumes: information, not quality


@dataclass(frozen=True)
class EmptyPolicy:
    """What a metric gives when the reference, the test or both masks are empty (text for people)."""

    both_empty: str
    ref_empty: str
    test_empty: str

    def to_dict(self) -> Dict[str, str]:
        return {"both_empty": self.both_empty, "reference_empty": self.ref_empty, "test_empty": self.test_empty}


@dataclass(frozen=True)
class MetricValue:
    """A computed value; ``reason`` says why it is NaN or conventional (empty when ordinary)."""

    value: float
    reason: str = ""

    @property
    def defined(self) -> bool:
        return not math.isnan(self.value)

    def json_value(self) -> Any:
        """The value for JSON: integers stay integers, NaN becomes null (the reason says why)."""
        if isinstance(self.value, (int, np.integer)) and not isinstance(self.value, bool):
            return int(self.value)
        if math.isnan(self.value):
            return None
        return float(self.value)


BOTH_EMPTY_AGREE = "both masks empty: agreement on absence (Metrics Reloaded convention)"


class Metric:
    """Base class of a metric; subclasses set the class attributes and :meth:`compute`."""

    name: ClassVar[str]
    title: ClassVar[str]
    title_zh: ClassVar[str]
    unit: ClassVar[str] = ""
    group: ClassVar[str]
    definition: ClassVar[str]
    reference: ClassVar[str]
    direction: ClassVar[Direction]
    empty_policy: ClassVar[EmptyPolicy]
    batch_policy: ClassVar[str] = "undefined values are left out of the batch mean and counted"
    integer: ClassVar[bool] = False
    #: Depends on the number of true negatives (printed with the domain).
    uses_domain: ClassVar[bool] = False

    def compute(self, stats: Any, options: MetricOptions) -> MetricValue:
        raise NotImplementedError

    def localized_title(self, locale: str = "en") -> str:
        return self.title_zh if locale.lower().startswith("zh") else self.title

    @classmethod
    def describe(cls) -> Dict[str, Any]:
        """The registry entry as JSON (``mmanno qc metrics``, the report's definitions)."""
        return {
            "name": cls.name, "title": cls.title, "title_zh": cls.title_zh, "unit": cls.unit, "group": cls.group,
            "definition": cls.definition, "reference": cls.reference, "direction": cls.direction.value,
            "empty_policy": cls.empty_policy.to_dict(), "batch_policy": cls.batch_policy,
            "depends_on_domain": cls.uses_domain,
        }


PAIR_METRICS: List[Metric] = []
DETECTION_METRICS: List[Metric] = []


def register(cls: type) -> type:
    """Class decorator: add an instance of the metric to its registry (in definition order)."""
    instance = cls()
    target = DETECTION_METRICS if instance.group == "detection" else PAIR_METRICS
    if any(m.name == instance.name for m in PAIR_METRICS + DETECTION_METRICS):
        raise ValueError(f"metric name {instance.name!r} registered twice")
    target.append(instance)
    return cls


def metric(name: str) -> Metric:
    """The registered metric called ``name``."""
    for m in PAIR_METRICS + DETECTION_METRICS:
        if m.name == name:
            return m
    raise KeyError(f"no metric named {name!r}; known: {', '.join(m.name for m in PAIR_METRICS + DETECTION_METRICS)}")


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else NAN


# --------------------------------------------------------------------------- overlap
@register
class Dice(Metric):
    name = "dice"
    title = "Dice similarity coefficient"
    title_zh = "Dice 相似系数"
    group = "overlap"
    definition = "DSC = 2·TP / (2·TP + FP + FN) = 2|R∩T| / (|R| + |T|)"
    reference = "Dice LR, Ecology 26:297 (1945); SPEC Appendix D"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("1 (" + BOTH_EMPTY_AGREE + ")", "0", "0")
    batch_policy = "always defined (an empty mask against a non-empty one counts 0)"

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        c = stats.counts
        if c.n_ref + c.n_test == 0:
            return MetricValue(1.0, BOTH_EMPTY_AGREE)
        return MetricValue(2.0 * c.tp / (c.n_ref + c.n_test))


@register
class IoU(Metric):
    name = "iou"
    title = "Intersection over union (Jaccard)"
    title_zh = "交并比 (Jaccard)"
    group = "overlap"
    definition = "IoU = TP / (TP + FP + FN) = |R∩T| / |R∪T| = DSC / (2 − DSC)"
    reference = "Jaccard P, New Phytol 11:37 (1912); Metrics Reloaded (2024)"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("1 (" + BOTH_EMPTY_AGREE + "; Metrics Reloaded returns NaN here)", "0", "0")
    batch_policy = "always defined"

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        c = stats.counts
        if c.union == 0:
            return MetricValue(1.0, BOTH_EMPTY_AGREE)
        return MetricValue(c.tp / c.union)


@register
class Conformity(Metric):
    name = "conformity"
    title = "Conformity coefficient"
    title_zh = "一致性系数 (Conformity)"
    group = "overlap"
    definition = "Conformity = 1 − (FP + FN) / TP (wrongly segmented voxels over correctly segmented ones); ≤ 1"
    reference = "Chang HH et al., NeuroImage 47:122 (2009); SPEC Appendix D"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("1 (" + BOTH_EMPTY_AGREE + ")",
                               "NaN: TP = 0, conformity tends to −∞", "NaN: TP = 0, conformity tends to −∞")
    batch_policy = "TP = 0 (NaN) counts as the worst case: the case is listed and left out of the mean"

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        c = stats.counts
        if c.union == 0:
            return MetricValue(1.0, BOTH_EMPTY_AGREE)
        if c.tp == 0:
            return MetricValue(NAN, "no overlap (TP = 0): conformity tends to −∞")
        return MetricValue(1.0 - (c.fp + c.fn) / c.tp)


# --------------------------------------------------------------------------- counts and volumes
class _Count(Metric):
    unit = "voxels"
    group = "confusion"
    direction = Direction.NONE
    integer = True
    empty_policy = EmptyPolicy("0", "as counted", "as counted")
    batch_policy = "summed over cases"
    reference = "SPEC Appendix D (confusion matrix)"
    field_name: ClassVar[str]

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        return MetricValue(int(getattr(stats.counts, self.field_name)))


@register
class TruePositives(_Count):
    name = "tp"
    title = "True positive voxels"
    title_zh = "真阳性体素数"
    definition = "TP = |R ∩ T|: voxels in both the reference and the test mask"
    field_name = "tp"


@register
class FalsePositives(_Count):
    name = "fp"
    title = "False positive voxels"
    title_zh = "假阳性体素数"
    definition = "FP = |T \\ R|: voxels in the test mask only (over-annotation)"
    field_name = "fp"


@register
class FalseNegatives(_Count):
    name = "fn"
    title = "False negative voxels"
    title_zh = "假阴性体素数"
    definition = "FN = |R \\ T|: voxels in the reference mask only (missed)"
    field_name = "fn"


@register
class TrueNegatives(_Count):
    name = "tn"
    title = "True negative voxels (in the domain)"
    title_zh = "真阴性体素数（计数域内）"
    definition = "TN = voxels of the domain (whole image, union bounding box or body mask) in neither mask"
    uses_domain = True

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        return MetricValue(int(stats.tn))


class _Volume(Metric):
    unit = "mL"
    group = "volume"
    reference = "voxel count × voxel volume (|det(direction·diag(spacing))|) / 1000"
    batch_policy = "always defined"


@register
class VolumeRef(_Volume):
    name = "volume_ref_ml"
    title = "Reference volume"
    title_zh = "参考体积"
    definition = "|R| · voxel volume (mm³) / 1000"
    direction = Direction.NONE
    empty_policy = EmptyPolicy("0", "0", "as measured")

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        return MetricValue(stats.counts.n_ref * stats.voxel_volume_mm3 / 1000.0)


@register
class VolumeTest(_Volume):
    name = "volume_test_ml"
    title = "Test volume"
    title_zh = "待评体积"
    definition = "|T| · voxel volume (mm³) / 1000"
    direction = Direction.NONE
    empty_policy = EmptyPolicy("0", "as measured", "0")

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        return MetricValue(stats.counts.n_test * stats.voxel_volume_mm3 / 1000.0)


@register
class VolumeDifference(_Volume):
    name = "volume_difference_ml"
    title = "Volume difference (test − reference)"
    title_zh = "体积差（待评 − 参考）"
    definition = "(|T| − |R|) · voxel volume / 1000; positive when the test is larger"
    direction = Direction.TOWARDS_ZERO
    empty_policy = EmptyPolicy("0", "the test volume", "minus the reference volume")

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        c = stats.counts
        return MetricValue((c.n_test - c.n_ref) * stats.voxel_volume_mm3 / 1000.0)


@register
class RelativeVolumeDifference(Metric):
    name = "relative_volume_difference"
    title = "Relative volume difference"
    title_zh = "相对体积差"
    unit = "%"
    group = "volume"
    definition = "100 · (|T| − |R|) / |R|"
    reference = "Heimann T et al., IEEE TMI 28:1251 (2009)"
    direction = Direction.TOWARDS_ZERO
    empty_policy = EmptyPolicy("NaN: no reference volume", "NaN: no reference volume", "−100")

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        c = stats.counts
        if c.n_ref == 0:
            return MetricValue(NAN, "reference mask empty: relative volume difference undefined")
        return MetricValue(100.0 * (c.n_test - c.n_ref) / c.n_ref)


# --------------------------------------------------------------------------- confusion-matrix rates
@register
class Sensitivity(Metric):
    name = "sensitivity"
    title = "Sensitivity (recall)"
    title_zh = "敏感度（召回率）"
    group = "confusion"
    definition = "Sen = TP / (TP + FN) (standard definition; Appendix D's legend swaps words)"
    reference = "Yerushalmy J, Public Health Rep 62:1432 (1947); SPEC Decisions"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("NaN: no reference positives", "NaN: no reference positives", "0")

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        c = stats.counts
        if c.n_ref == 0:
            return MetricValue(NAN, "reference mask empty: sensitivity undefined")
        return MetricValue(c.tp / c.n_ref)


@register
class Precision(Metric):
    name = "precision"
    title = "Precision (positive predictive value)"
    title_zh = "精确率（阳性预测值）"
    group = "confusion"
    definition = "PPV = TP / (TP + FP)"
    reference = "Metrics Reloaded (2024)"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("NaN: no test positives", "0", "NaN: no test positives")

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        c = stats.counts
        if c.n_test == 0:
            return MetricValue(NAN, "test mask empty: precision undefined")
        return MetricValue(c.tp / c.n_test)


@register
class Specificity(Metric):
    name = "specificity"
    title = "Specificity"
    title_zh = "特异度"
    group = "confusion"
    definition = "Spe = TN / (TN + FP), TN counted in the stated domain"
    reference = "Yerushalmy J (1947); SPEC Appendix D and Decisions (domain)"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("1 when the domain has negatives", "as counted", "as counted")
    uses_domain = True

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        negatives = stats.tn + stats.counts.fp
        if negatives == 0:
            return MetricValue(NAN, f"no negatives in the domain '{stats.domain}': specificity undefined")
        return MetricValue(stats.tn / negatives)


@register
class Accuracy(Metric):
    name = "accuracy"
    title = "Accuracy"
    title_zh = "准确率"
    group = "confusion"
    definition = "Acc = (TP + TN) / (TP + TN + FP + FN), TN counted in the stated domain"
    reference = "SPEC Appendix D"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("1", "as counted", "as counted")
    uses_domain = True

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        c = stats.counts
        n = c.union + stats.tn
        if n == 0:
            return MetricValue(NAN, "empty domain")
        return MetricValue((c.tp + stats.tn) / n)


def kappa_from_counts(tp: int, fp: int, fn: int, tn: int) -> MetricValue:
    """Cohen's kappa of a 2x2 table (Appendix D): Acc = (TP+TN)/N, p_e = Σ row·col / N²,
    κ = (Acc − p_e)/(1 − p_e). Exact integer arithmetic for the sums (no per-voxel table)."""
    n = tp + fp + fn + tn
    if n == 0:
        return MetricValue(NAN, "empty domain")
    chance_times_n2 = (tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)
    if chance_times_n2 == n * n:
        return MetricValue(NAN, "chance agreement is 1 (one category only): kappa undefined")
    observed = (tp + tn) / n
    chance = chance_times_n2 / (n * n)
    return MetricValue((observed - chance) / (1.0 - chance))


@register
class VoxelKappa(Metric):
    name = "kappa"
    title = "Cohen's kappa (voxel-wise)"
    title_zh = "Kappa 系数（体素级）"
    group = "confusion"
    definition = ("κ = (Acc − p_e)/(1 − p_e), Acc = (TP+TN)/N, p_e = ((TP+FP)(TP+FN) + (FN+TN)(FP+TN))/N², "
                  "N and TN counted in the stated domain")
    reference = "Cohen J, Educ Psychol Meas 20:37 (1960); SPEC Appendix D"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("NaN: one category only", "as counted (NaN when nothing is positive)",
                               "as counted (NaN when nothing is positive)")
    uses_domain = True

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        c = stats.counts
        return kappa_from_counts(c.tp, c.fp, c.fn, stats.tn)


# --------------------------------------------------------------------------- surface distances
def _distance_guard(stats: PairStatistics) -> Optional[MetricValue]:
    if stats.surfaces is None:
        return MetricValue(NAN, "surface distances were not computed")
    if stats.ref_empty and stats.test_empty:
        return MetricValue(0.0, BOTH_EMPTY_AGREE)
    if stats.ref_empty:
        return MetricValue(NAN, "reference mask empty: distance undefined (batch: worst case)")
    if stats.test_empty:
        return MetricValue(NAN, "test mask empty: distance undefined (batch: worst case)")
    return None


_DISTANCE_EMPTY = EmptyPolicy("0 (" + BOTH_EMPTY_AGREE + ")", "NaN with the reason; batch: worst case",
                              "NaN with the reason; batch: worst case")
_WORST = "NaN (one mask empty) is replaced by the worst case, the image diagonal in mm, and counted"


@register
class Hausdorff(Metric):
    name = "hausdorff_mm"
    title = "Hausdorff distance (maximum)"
    title_zh = "Hausdorff 距离（最大值）"
    unit = "mm"
    group = "surface"
    definition = "HD = max(max_r d(r, ∂T), max_t d(t, ∂R)) over 6-connected boundary voxels, mm, physical space"
    reference = "Huttenlocher DP et al., IEEE PAMI 15:850 (1993); Metrics Reloaded (2024)"
    direction = Direction.LOWER
    empty_policy = _DISTANCE_EMPTY
    batch_policy = _WORST

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        guard = _distance_guard(stats)
        if guard is not None:
            return guard
        s = stats.surfaces
        assert s is not None
        return MetricValue(float(max(s.ref_to_test.max(), s.test_to_ref.max())))


@register
class Hausdorff95(Metric):
    name = "hausdorff95_mm"
    title = "Hausdorff distance, 95th percentile"
    title_zh = "95% Hausdorff 距离"
    unit = "mm"
    group = "surface"
    definition = ("HD95 = max(P95{d(r, ∂T)}, P95{d(t, ∂R)}): the larger of the two directed 95th percentiles "
                  "(linear interpolation), boundary voxels counted equally")
    reference = "Metrics Reloaded (2024), MetricsReloaded.measured_hausdorff_distance_perc"
    direction = Direction.LOWER
    empty_policy = _DISTANCE_EMPTY
    batch_policy = _WORST

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        guard = _distance_guard(stats)
        if guard is not None:
            return guard
        s = stats.surfaces
        assert s is not None
        q = options.percentile
        return MetricValue(float(max(np.percentile(s.ref_to_test, q), np.percentile(s.test_to_ref, q))))


@register
class AverageSymmetricSurfaceDistance(Metric):
    name = "mean_surface_distance_mm"
    title = "Average symmetric surface distance (ASSD)"
    title_zh = "平均对称表面距离 (ASSD)"
    unit = "mm"
    group = "surface"
    definition = "ASSD = (Σ_r d(r, ∂T) + Σ_t d(t, ∂R)) / (|∂R| + |∂T|): the pooled mean of both directions"
    reference = "Heimann T et al. (2009); Metrics Reloaded (2024) ASSD"
    direction = Direction.LOWER
    empty_policy = _DISTANCE_EMPTY
    batch_policy = _WORST

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        guard = _distance_guard(stats)
        if guard is not None:
            return guard
        s = stats.surfaces
        assert s is not None
        total = float(s.ref_to_test.sum() + s.test_to_ref.sum())
        return MetricValue(total / (s.n_ref_surface + s.n_test_surface))


@register
class MeanAverageSurfaceDistance(Metric):
    name = "masd_mm"
    title = "Mean average surface distance (MASD)"
    title_zh = "平均表面距离均值 (MASD)"
    unit = "mm"
    group = "surface"
    definition = "MASD = (mean_r d(r, ∂T) + mean_t d(t, ∂R)) / 2: the mean of the two directed means"
    reference = "Metrics Reloaded (2024) MASD"
    direction = Direction.LOWER
    empty_policy = _DISTANCE_EMPTY
    batch_policy = _WORST

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        guard = _distance_guard(stats)
        if guard is not None:
            return guard
        s = stats.surfaces
        assert s is not None
        return MetricValue(0.5 * (float(s.ref_to_test.mean()) + float(s.test_to_ref.mean())))


@register
class NormalisedSurfaceDistance(Metric):
    name = "nsd"
    title = "Normalised surface distance (at tolerance τ)"
    title_zh = "归一化表面距离（容差 τ）"
    group = "surface"
    definition = ("NSD(τ) = (|{r ∈ ∂R: d(r, ∂T) ≤ τ}| + |{t ∈ ∂T: d(t, ∂R) ≤ τ}|) / (|∂R| + |∂T|), "
                  "boundary voxels counted equally")
    reference = "Nikolov S et al., J Med Internet Res 23:e26151 (2021); Metrics Reloaded (2024) NSD"
    direction = Direction.HIGHER
    empty_policy = EmptyPolicy("1 (" + BOTH_EMPTY_AGREE + ")", "0", "0")
    batch_policy = "always defined"

    def compute(self, stats: PairStatistics, options: MetricOptions) -> MetricValue:
        s = stats.surfaces
        if s is None:
            return MetricValue(NAN, "surface distances were not computed")
        n = s.n_ref_surface + s.n_test_surface
        if n == 0:
            return MetricValue(1.0, BOTH_EMPTY_AGREE)
        # A distance equal to tau counts as within it, also after the last-bit rounding of an oblique
        # grid's coordinates (1e-9 relative allowance; tau = slice spacing is a common choice).
        tau = options.nsd_tolerance_mm * (1.0 + 1e-9) + 1e-12
        within = int(np.count_nonzero(s.ref_to_test <= tau)) + int(np.count_nonzero(s.test_to_ref <= tau))
        return MetricValue(within / n)


def compute_pair_metrics(stats: PairStatistics, options: Optional[MetricOptions] = None) -> Dict[str, MetricValue]:
    """Every pair metric of the registry for one reference/test pair, by name."""
    opts = options or MetricOptions()
    return {m.name: m.compute(stats, opts) for m in PAIR_METRICS}


def registry_table(locale: str = "en") -> List[Tuple[str, str, str]]:
    """(name, title, unit) of every metric in registry order (what the Slicer table shows)."""
    return [(m.name, m.localized_title(locale), m.unit) for m in PAIR_METRICS + DETECTION_METRICS]


# The detection metrics register themselves when their module is imported; import it here so that
# the registry is complete whichever module a caller imports first.
from . import detection as _detection  # noqa: E402, F401
