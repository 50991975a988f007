"""The fusion guard (R-8.4.1.4): annotation on a non-reference modality happens only on its
registered (resampled) image, and only when its registration exists and its error is within the
task's threshold; otherwise the guard refuses with the reason.

The task names the reference image (``data[].role == "reference"``) and the threshold
(``qc.fusion_deviation_mm``, 3-5 mm, default 3). The error judged for a moving series is every
measurement recorded for it: landmark TRE (mean), the image residual (translation, rotation) and,
for PET-CT, the body-outline check. A registration with none of them is "unverified" and refused:
the specification asks for the registration error to be evaluated (R-7.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from RTSSBridgeLib.errors import InputError

from ..tasks import DEFAULT_QC, TaskDefinition

#: Rotation residual beyond which a registration fails the guard (degrees).
DEFAULT_ROTATION_LIMIT_DEG = 2.0
MIN_THRESHOLD_MM = 3.0
MAX_THRESHOLD_MM = 5.0


class FusionGuardError(InputError):
    """The guard refused an annotation; the message is the reason."""


@dataclass
class RegistrationState:
    """What is known about one moving series' registration onto the reference."""

    series_key: str
    transform_file: str = ""
    tre_mean_mm: Optional[float] = None
    tre_max_mm: Optional[float] = None
    residual_translation_mm: Optional[float] = None
    residual_rotation_deg: Optional[float] = None
    alignment_passed: Optional[bool] = None
    alignment_reason: str = ""

    @property
    def verified(self) -> bool:
        return any(v is not None for v in (self.tre_mean_mm, self.residual_translation_mm, self.alignment_passed))


@dataclass(frozen=True)
class GuardDecision:
    """Whether annotating ``series_key`` is allowed now, and why."""

    series_key: str
    allowed: bool
    reason: str
    state: str  # reference | registered | unregistered | unverified | failing | original_grid

    def to_dict(self) -> Dict[str, Any]:
        return {"series_key": self.series_key, "allowed": self.allowed, "state": self.state, "reason": self.reason}


@dataclass
class FusionGuard:
    """Guard of one case: the reference series, the threshold and the registrations recorded."""

    reference: str
    threshold_mm: float = float(DEFAULT_QC["fusion_deviation_mm"])
    rotation_limit_deg: float = DEFAULT_ROTATION_LIMIT_DEG
    moving: List[str] = field(default_factory=list)
    registrations: Dict[str, RegistrationState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not MIN_THRESHOLD_MM <= float(self.threshold_mm) <= MAX_THRESHOLD_MM:
            raise InputError(f"must be within {MIN_THRESHOLD_MM:g}-{MAX_THRESHOLD_MM:g} mm (8.4.1.5), got "
                             f"{self.threshold_mm}", field="fusion_deviation_mm")
        if not self.reference:
            raise InputError("no reference image; rule: the task names the image annotations are drawn on",
                             field="reference")

    @classmethod
    def from_task(cls, task: TaskDefinition) -> FusionGuard:
        """The guard of a task: its reference image, its moving images, its fusion threshold."""
        reference = task.reference_image
        if reference is None:
            raise InputError("the task has no reference image (data[].role reference)", field="data")
        moving = [d["name"] for d in task.data["data"] if d["kind"] == "image" and d["role"] == "moving"]
        return cls(reference=reference, threshold_mm=task.qc.fusion_deviation_mm, moving=moving)

    def record(self, state: RegistrationState) -> None:
        """Record (or replace) what is known about a moving series' registration."""
        if state.series_key == self.reference:
            raise InputError(f"{state.series_key} is the reference; rule: only moving series are registered",
                             field="series_key")
        self.registrations[state.series_key] = state

    def decide(self, series_key: str, on_registered_image: bool = True) -> GuardDecision:
        """May a structure be annotated on ``series_key`` (on its registered image when
        ``on_registered_image``, else on its original grid)?"""
        if series_key == self.reference:
            return GuardDecision(series_key, True, f"{series_key} is the reference image", "reference")
        state = self.registrations.get(series_key)
        if state is None or not state.transform_file:
            return GuardDecision(series_key, False, f"{series_key} has no registration onto {self.reference}; register "
                                 "it first (mmanno register) - annotating unaligned modalities separately is not "
                                 "allowed (R-8.4.1.4)", "unregistered")
        if not state.verified:
            return GuardDecision(series_key, False, f"the registration of {series_key} has no measured error (TRE, "
                                 "residual or body-outline check); evaluate it first (R-7.4)", "unverified")
        failures = self.failures(state)
        if failures:
            return GuardDecision(series_key, False, f"the registration of {series_key} fails the task threshold: "
                                 + "; ".join(failures) + " - re-register before annotating (R-8.4.1)", "failing")
        if not on_registered_image:
            return GuardDecision(series_key, False, f"annotate {series_key} on its registered image (resampled onto "
                                 f"{self.reference}), not on its original grid (R-8.4.1.4)", "original_grid")
        return GuardDecision(series_key, True, f"{series_key} is registered onto {self.reference} within "
                             f"{self.threshold_mm:g} mm", "registered")

    def failures(self, state: RegistrationState) -> List[str]:
        out = []
        t = self.threshold_mm
        if state.tre_mean_mm is not None and state.tre_mean_mm > t:
            out.append(f"landmark TRE mean {state.tre_mean_mm:.2f} mm > {t:g} mm")
        if state.residual_translation_mm is not None and state.residual_translation_mm > t:
            out.append(f"residual translation {state.residual_translation_mm:.2f} mm > {t:g} mm")
        if state.residual_rotation_deg is not None and state.residual_rotation_deg > self.rotation_limit_deg:
            out.append(f"residual rotation {state.residual_rotation_deg:.2f} deg > {self.rotation_limit_deg:g} deg")
        if state.alignment_passed is False:
            out.append(state.alignment_reason or "PET-CT body-outline check failed")
        return out

    def require(self, series_key: str, on_registered_image: bool = True) -> GuardDecision:
        """:meth:`decide`, raising :class:`FusionGuardError` with the reason when refused."""
        decision = self.decide(series_key, on_registered_image)
        if not decision.allowed:
            raise FusionGuardError(decision.reason, field=series_key)
        return decision

    def states(self) -> List[GuardDecision]:
        """The decision for the reference and every known series (the panel shows these)."""
        keys = [self.reference, *self.moving, *[k for k in self.registrations if k not in self.moving]]
        return [self.decide(k) for k in keys]
