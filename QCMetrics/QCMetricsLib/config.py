"""QC configuration: thresholds and options of a comparison (R-6.2 "QC thresholds", R-10.2).

Read from a QC configuration file or from the ``qc`` object of a task file (``--task``), validated
against ``Resources/schemas/qc-config.schema.json`` (v1). Every field has a default, so an empty
object is a valid configuration.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.resources import schema_path

from .options import DetectionOptions, MetricOptions

SCHEMA_ID = "https://multimodalannotation.github.io/schemas/qc-config/v1"
DOMAINS = ("image", "bbox", "mask")
COMPARISONS = ("annotators", "versions", "modalities", "ai-vs-human")
#: Label codes or names that make a label a lesion for detection (case-insensitive substrings),
#: used when the configuration names no detection labels.
DEFAULT_LESION_WORDS = ("LESION", "NODULE", "METAST", "TUMOR", "TUMOUR", "GTV", "MASS", "CANCER")


@dataclass(frozen=True)
class Containment:
    """A plausibility rule (R-9.2): the ``child`` label must lie inside the ``parent`` label."""

    child: str
    parent: str
    max_outside_fraction: float = 0.0


@dataclass(frozen=True)
class VerdictRules:
    """How metrics and findings become the verdict (R-10.2.3)."""

    rework_dice: float = 0.5
    min_detection_recall: float = 0.9
    rework_detection_recall: float = 0.5
    max_hd95_mm: Optional[float] = None
    max_flagged_fraction: float = 0.34
    rework_case_fraction: float = 0.2
    limited_case_fraction: float = 0.0


@dataclass(frozen=True)
class QCConfig:
    """All options of ``qc compare`` and ``qc batch``."""

    dice_threshold: float = 0.75
    nsd_tolerance_mm: float = 2.0
    hd_percentile: float = 95.0
    domain: str = "image"
    comparison: str = "annotators"
    detection: DetectionOptions = field(default_factory=DetectionOptions)
    detection_labels: Tuple[str, ...] = ()
    verdict: VerdictRules = field(default_factory=VerdictRules)
    containment: Tuple[Containment, ...] = ()
    required_attributes: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    traceability_fields: Tuple[str, ...] = ("annotator", "version", "timestamps", "software")
    worst_case_distance: str = "diagonal"

    def __post_init__(self) -> None:
        if not 0.0 <= self.dice_threshold <= 1.0:
            raise InputError(f"must be between 0 and 1, got {self.dice_threshold!r}", field="dice_threshold")
        if self.domain not in DOMAINS:
            raise InputError(f"must be one of {', '.join(DOMAINS)}, got {self.domain!r}", field="domain")
        if self.comparison not in COMPARISONS:
            raise InputError(f"must be one of {', '.join(COMPARISONS)}, got {self.comparison!r}",
                             field="comparison")
        if not (math.isfinite(self.nsd_tolerance_mm) and self.nsd_tolerance_mm >= 0):
            raise InputError(f"must be a non-negative number, got {self.nsd_tolerance_mm!r}",
                             field="nsd_tolerance_mm")

    @property
    def metric_options(self) -> MetricOptions:
        return MetricOptions(nsd_tolerance_mm=self.nsd_tolerance_mm, percentile=self.hd_percentile)

    def replace(self, **changes: Any) -> QCConfig:
        import dataclasses

        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        v = self.verdict
        return {
            "dice_threshold": self.dice_threshold, "nsd_tolerance_mm": self.nsd_tolerance_mm,
            "hd_percentile": self.hd_percentile, "domain": self.domain, "comparison": self.comparison,
            "detection": {**self.detection.to_dict(), "labels": list(self.detection_labels)},
            "verdict": {"rework_dice": v.rework_dice, "min_detection_recall": v.min_detection_recall,
                        "rework_detection_recall": v.rework_detection_recall, "max_hd95_mm": v.max_hd95_mm,
                        "max_flagged_fraction": v.max_flagged_fraction,
                        "rework_case_fraction": v.rework_case_fraction,
                        "limited_case_fraction": v.limited_case_fraction},
            "containment": [{"child": c.child, "parent": c.parent, "max_outside_fraction": c.max_outside_fraction}
                            for c in self.containment],
            "required_attributes": {k: list(v) for k, v in self.required_attributes.items()},
            "traceability_fields": list(self.traceability_fields),
            "worst_case_distance": self.worst_case_distance,
        }


@lru_cache(maxsize=4)
def _schema(name: str) -> Dict[str, Any]:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


def validate_json(data: Any, schema_name: str, file: str) -> None:
    """Validate ``data`` against a schema of ``Resources/schemas``; one-line InputError naming the field."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema(schema_name))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InputError(f"{error.message} (schema {schema_name} v1)", file=file, field=where)


def config_from_dict(data: Dict[str, Any], file: str = "<config>") -> QCConfig:
    """A :class:`QCConfig` from a validated QC configuration object."""
    validate_json(data, "qc-config", file)
    det = data.get("detection", {})
    ver = data.get("verdict", {})
    try:
        detection = DetectionOptions(
            criterion=det.get("criterion", "overlap"), min_iou=float(det.get("min_iou", 0.0)),
            max_centre_distance_mm=float(det.get("max_centre_distance_mm", 5.0)),
            connectivity=int(det.get("connectivity", 26)), min_object_voxels=int(det.get("min_object_voxels", 1)))
    except ValueError as exc:
        raise InputError(str(exc), file=file, field="detection") from exc
    defaults = VerdictRules()
    verdict = VerdictRules(**{k: ver.get(k, getattr(defaults, k)) for k in defaults.__dataclass_fields__})
    return QCConfig(
        dice_threshold=float(data.get("dice_threshold", 0.75)),
        nsd_tolerance_mm=float(data.get("nsd_tolerance_mm", 2.0)),
        hd_percentile=float(data.get("hd_percentile", 95.0)),
        domain=data.get("domain", "image"),
        comparison=data.get("comparison", "annotators"),
        detection=detection,
        detection_labels=tuple(det.get("labels", ())),
        verdict=verdict,
        containment=tuple(Containment(c["child"], c["parent"], float(c.get("max_outside_fraction", 0.0)))
                          for c in data.get("containment", ())),
        required_attributes={k: tuple(v) for k, v in data.get("required_attributes", {}).items()},
        traceability_fields=tuple(data.get("traceability_fields", QCConfig.traceability_fields)),
        worst_case_distance=str(data.get("worst_case_distance", "diagonal")),
    )


def load_config(path: str) -> QCConfig:
    """Read a QC configuration file, or the ``qc`` object of a task file (R-6.2)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", file=str(path), field="--task")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", file=str(path)) from exc
    if not isinstance(data, dict):
        raise InputError("must hold a JSON object", file=str(path))
    if "qc" in data:
        if not isinstance(data["qc"], dict):
            raise InputError("must be an object of QC thresholds", file=str(path), field="qc")
        return config_from_dict(data["qc"], str(path))
    return config_from_dict(data, str(path))


def lesion_like(code: Optional[str], name: str, patterns: List[str]) -> bool:
    """True when a label counts as a lesion for detection: it matches a configured pattern (code,
    name or value as text, case-insensitive; ``*`` wildcards allowed) or, with no patterns, its code
    or name contains one of :data:`DEFAULT_LESION_WORDS`."""
    import fnmatch

    texts = [t for t in (code or "", name) if t]
    if patterns:
        return any(fnmatch.fnmatchcase(t.casefold(), p.casefold()) for p in patterns for t in texts)
    return any(word in t.upper() for word in DEFAULT_LESION_WORDS for t in texts)
