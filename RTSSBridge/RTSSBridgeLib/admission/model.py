"""The admission check's data: profiles, findings, cases and series views (R-6.3, R-7.2).

A finding always says what (``code``), how bad (``severity``), whether it blocks admission
(``blocking``), where (``case``, ``series``, ``files``) and which rule it breaks (``rule``,
``clause``, ``rule_title``). Messages name attributes, sizes and files, never a patient's name or
identifier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import resources
from ..dicom_series import DicomSeries
from ..jsonschemas import read_json

PROFILE_SCHEMA = "admission-profile"
BUILTIN_FOLDER = resources.ADMISSION_PROFILES
#: Files listed per finding in the report (the count is always complete).
MAX_FILES_LISTED = 25


@dataclass(frozen=True)
class RuleSpec:
    """One rule of a profile, as configured."""

    rule: str
    clause: str
    title: str
    blocking: bool
    severity: str
    modalities: Tuple[str, ...]
    params: Dict[str, Any]

    def applies_to(self, modality: str) -> bool:
        return not self.modalities or modality in self.modalities


@dataclass
class AdmissionProfile:
    """A validated admission profile (schema ``admission-profile``)."""

    name: str
    title: str
    version: str
    source: str
    allowed_data: Tuple[str, ...]
    max_file_mb: float
    layout: str
    rules: List[RuleSpec]
    path: str = ""

    def rule(self, name: str) -> Optional[RuleSpec]:
        return next((r for r in self.rules if r.rule == name), None)


def builtin_admission_profiles() -> List[str]:
    """Names of the admission profiles shipped in ``Resources/profiles/admission``."""
    return resources.builtin_names(*BUILTIN_FOLDER)


def load_admission_profile(name_or_path: str) -> AdmissionProfile:
    """A built-in profile by name, or a profile file; raises :class:`InputError` naming the problem."""
    path = resources.builtin_or_file(name_or_path, BUILTIN_FOLDER, "admission")
    doc = read_json(path, PROFILE_SCHEMA)
    rules = []
    for r in doc["rules"]:
        severity = r.get("severity", "error" if r["blocking"] else "warning")
        rules.append(RuleSpec(r["rule"], r["clause"], r["title"], bool(r["blocking"]), severity,
                              tuple(r.get("modalities", ())), dict(r.get("params", {}))))
    return AdmissionProfile(name=doc["name"], title=doc["title"], version=doc["version"], source=doc["source"],
                            allowed_data=tuple(doc["screening"]["allowed_data"]),
                            max_file_mb=float(doc["screening"]["max_file_mb"]), layout=doc["cases"]["layout"],
                            rules=rules, path=path)


@dataclass
class Finding:
    """One thing wrong (or worth knowing) about a delivery."""

    code: str
    severity: str  # error | warning | info
    message: str
    rule: RuleSpec
    case: str = ""  # "" for the batch
    series: str = ""  # Series Instance UID ("" when the finding is not about one series)
    series_label: str = ""
    files: Sequence[str] = ()

    @property
    def blocking(self) -> bool:
        """A finding blocks admission when its rule blocks and it is an error."""
        return self.rule.blocking and self.severity == "error"

    def to_dict(self, root: str) -> Dict[str, Any]:
        files = [os.path.relpath(f, root) if os.path.isabs(f) or os.path.exists(f) else f for f in self.files]
        return {
            "code": self.code, "severity": self.severity, "blocking": self.blocking, "rule": self.rule.rule,
            "clause": self.rule.clause, "rule_title": self.rule.title, "case": self.case or None,
            "series": self.series or None, "series_label": self.series_label or None,
            "files": files[:MAX_FILES_LISTED], "n_files": len(files), "message": " ".join(self.message.split()),
        }


@dataclass
class SeriesView:
    """A loadable series as admission sees it: the scan's series plus a few header facts."""

    series: DicomSeries
    label: str
    patient_key: str  # hash of Patient ID (or name + birth date): compares, never shown
    identity_hashes: Dict[str, str]  # attribute -> hash, for the consistency rule
    rescale_present: bool
    case: str = ""
    patient_id: str = ""  # in memory only (pairing with record rows); never written to a report

    @property
    def modality(self) -> str:
        return self.series.modality

    @property
    def files(self) -> List[str]:
        return self.series.files


@dataclass
class Case:
    """One case of the batch: its folder (relative label), series and other files."""

    label: str
    folder: str
    series: List[SeriesView] = field(default_factory=list)
    other_objects: List[str] = field(default_factory=list)  # RTSS, RT Plan ... (not volumes)
    data_files: List[str] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)

    @property
    def modalities(self) -> List[str]:
        return sorted({s.modality for s in self.series if s.modality})
