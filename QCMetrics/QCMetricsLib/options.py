"""Parameters of the QC computations as plain values (no numpy, no scipy).

Kept apart from the kernels so that configuration reading and the command line (``mmanno``
starts without the numerical libraries) can name them; :mod:`QCMetricsLib.metrics` and
:mod:`QCMetricsLib.detection` re-export them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict

CRITERIA = ("overlap", "centre")
CONNECTIVITY = {6: 1, 18: 2, 26: 3}


@dataclass(frozen=True)
class MetricOptions:
    """Parameters of the pair metrics (printed with the numbers they change)."""

    nsd_tolerance_mm: float = 2.0
    percentile: float = 95.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nsd_tolerance_mm) and self.nsd_tolerance_mm >= 0):
            raise ValueError(f"nsd_tolerance_mm must be a non-negative number, got {self.nsd_tolerance_mm!r}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile!r}")


@dataclass(frozen=True)
class DetectionOptions:
    """How objects are found and matched."""

    criterion: str = "overlap"
    min_iou: float = 0.0
    max_centre_distance_mm: float = 5.0
    connectivity: int = 26
    min_object_voxels: int = 1

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.connectivity not in CONNECTIVITY:
            raise ValueError(f"connectivity must be 6, 18 or 26, got {self.connectivity!r}")
        if not 0.0 <= self.min_iou < 1.0:
            raise ValueError(f"min_iou must be in [0, 1), got {self.min_iou!r}")
        if not self.max_centre_distance_mm > 0:
            raise ValueError(f"max_centre_distance_mm must be positive, got {self.max_centre_distance_mm!r}")
        if self.min_object_voxels < 1:
            raise ValueError(f"min_object_voxels must be at least 1, got {self.min_object_voxels!r}")

    def to_dict(self) -> Dict[str, Any]:
        return {"criterion": self.criterion, "min_iou": self.min_iou,
                "max_centre_distance_mm": self.max_centre_distance_mm, "connectivity": self.connectivity,
                "min_object_voxels": self.min_object_voxels}
