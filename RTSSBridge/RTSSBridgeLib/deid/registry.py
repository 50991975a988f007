"""The pseudonym registry and the operations log, kept apart from the de-identified data (R-6.4.2).

The registry (``registry.json``, schema ``pseudonym-registry``) maps each real patient, study and
series to its pseudonyms and gives every case and series a unique identifier; it is the only
place where real identifiers are written, in a private folder that is created with mode 0700
and files with mode 0600, never inside the de-identified output, and never read by the
annotation side. The operations log (``operations.jsonl``, schema ``deid-operation``) records
what was done, when, with which profile and key fingerprint, and the counts - no identifying
value, no input path.

The pseudonyms themselves come from the key (keyed hashes), so the registry is a record, not a
lookup table the pseudonyms depend on: losing it loses the way back, not the consistency.
Writers take an exclusive lock (``fcntl.flock`` where available) so two runs never interleave.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional

from ..errors import InputError
from ..fileio import atomic_path
from ..jsonschemas import read_json, schema_id, validate_document

REGISTRY_SCHEMA = "pseudonym-registry"
OPERATION_SCHEMA = "deid-operation"
REGISTRY_FILE = "registry.json"
OPERATIONS_FILE = "operations.jsonl"
LOCK_FILE = ".lock"


def utc_now() -> str:
    """The time stamp format of every record (ISO 8601, UTC, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def make_private_folder(folder: str) -> str:
    """Create ``folder`` (and parents) with owner-only access; tighten it when it exists."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if os.name == "posix":
        os.chmod(folder, 0o700)
    return folder


@contextlib.contextmanager
def _locked(folder: str) -> Iterator[None]:
    path = os.path.join(folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # Windows: single writer assumed
            pass
        yield
    finally:
        os.close(fd)


class PseudonymRegistry:
    """The mapping real identifier -> pseudonym of one key, in a private folder."""

    def __init__(self, folder: str, key_fingerprint: str) -> None:
        self.folder = make_private_folder(folder)
        self.path = os.path.join(self.folder, REGISTRY_FILE)
        self.key_fingerprint = key_fingerprint
        self.data: Dict[str, Any] = {"schema": schema_id(REGISTRY_SCHEMA), "key_fingerprint": key_fingerprint,
                                     "updated_utc": utc_now(), "patients": [], "studies": [], "series": [],
                                     "runs": []}
        if os.path.exists(self.path):
            existing = read_json(self.path, REGISTRY_SCHEMA)
            if existing["key_fingerprint"] != key_fingerprint:
                raise InputError(f"the registry belongs to the key with fingerprint {existing['key_fingerprint']}, "
                                 f"not to this key ({key_fingerprint}); use that key or another registry folder "
                                 "(pseudonyms of two keys must not be mixed)", file=self.path, field="key_fingerprint")
            self.data = existing

    # ------------------------------------------------------------------ merging
    def _index(self, section: str, key: str) -> Dict[str, Dict[str, Any]]:
        return {str(entry[key]): entry for entry in self.data[section]}

    def add(self, outcomes: Iterable[Any], profile: str, run: Dict[str, Any]) -> Dict[str, Any]:
        """Merge the outcomes of one run; returns counts of new and known entries.

        Raises :class:`InputError` when one pseudonym would stand for two different real patients
        (a keyed-hash collision: widen the pseudonym format), and nothing is written then.
        """
        now = utc_now()
        patients = self._index("patients", "patient_key")
        by_pseudonym = {entry["pseudonym"]: entry for entry in self.data["patients"]}
        studies = self._index("studies", "study_uid")
        series = self._index("series", "series_uid")
        new = {"patients": 0, "studies": 0, "series": 0}
        counts: Dict[str, int] = {}
        for o in outcomes:
            if not o.written:
                continue
            patient_key = o.patient_id or f"name:{o.patient_name}"
            entry = patients.get(patient_key)
            if entry is None:
                other = by_pseudonym.get(o.patient_pseudonym)
                if other is not None and other["patient_key"] != patient_key:
                    raise InputError(f"pseudonym collision: two different patients map to {o.patient_pseudonym}; "
                                     "use a pseudonym format with more digits", file=self.path, field="patients")
                entry = {"patient_key": patient_key, "patient_id": o.patient_id, "patient_name": o.patient_name,
                         "pseudonym": o.patient_pseudonym, "date_offset_days": o.date_offset_days,
                         "profiles": [profile], "first_seen_utc": now, "last_seen_utc": now}
                patients[patient_key] = by_pseudonym[o.patient_pseudonym] = entry
                self.data["patients"].append(entry)
                new["patients"] += 1
            else:
                entry["last_seen_utc"] = now
                if profile not in entry["profiles"]:
                    entry["profiles"].append(profile)
            if o.study_uid and o.study_uid not in studies:
                study = {"study_uid": o.study_uid, "pseudonym_study_uid": o.study_pseudonym,
                         "accession": o.accession, "pseudonym_accession": o.accession_pseudonym,
                         "case_id": o.patient_pseudonym}
                studies[o.study_uid] = study
                self.data["studies"].append(study)
                new["studies"] += 1
            key = o.series_uid or f"no-series:{os.path.dirname(o.output)}"
            s = series.get(key)
            if s is None:
                number = "".join(ch for ch in o.series_number if ch.isdigit()) or "0"
                s = {"series_uid": key, "pseudonym_series_uid": o.series_pseudonym,
                     "series_id": f"{o.patient_pseudonym}-{o.modality or 'OT'}{number}",
                     "case_id": o.patient_pseudonym, "modality": o.modality, "n_files": 0,
                     "output_folder": os.path.dirname(o.output), "source_folders": []}
                series[key] = s
                self.data["series"].append(s)
                new["series"] += 1
                counts[key] = 0
            if key in counts:
                counts[key] += 1
            folder = os.path.dirname(o.source)
            if folder not in s["source_folders"]:
                s["source_folders"].append(folder)
        for key, n in counts.items():
            series[key]["n_files"] = n
        ids = [s["series_id"] for s in self.data["series"]]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        for entry in self.data["series"]:  # same modality and number twice in one case: disambiguate
            if entry["series_id"] in duplicates:
                entry["series_id"] = f"{entry['series_id']}-{entry['pseudonym_series_uid'][-6:]}"
        self.data["runs"].append(run)
        self.data["updated_utc"] = now
        return new

    def save(self, validate: bool = False) -> str:
        """Write the registry atomically with mode 0600 (it is validated when read)."""
        if validate:
            validate_document(self.data, REGISTRY_SCHEMA, self.path)
        with _locked(self.folder), atomic_path(self.path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.data, fh, indent=1, ensure_ascii=False)
                fh.write("\n")
            if os.name == "posix":
                os.chmod(tmp, 0o600)
        return self.path

    def case_ids(self) -> List[str]:
        return [p["pseudonym"] for p in self.data["patients"]]


def append_operation(folder: str, entry: Dict[str, Any]) -> str:
    """Append one entry to the operations log (created with mode 0600; validated when read)."""
    make_private_folder(folder)
    entry = dict(entry)
    entry.setdefault("schema", schema_id(OPERATION_SCHEMA))
    path = os.path.join(folder, OPERATIONS_FILE)
    line = json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n"
    with _locked(folder):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
    return path


def read_operations(folder: str) -> List[Dict[str, Any]]:
    """Every entry of the operations log (validated)."""
    path = os.path.join(folder, OPERATIONS_FILE)
    entries: List[Dict[str, Any]] = []
    if not os.path.exists(path):
        return entries
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"line {number} is not JSON ({exc.msg})", file=path, field="JSON") from exc
            validate_document(entry, OPERATION_SCHEMA, f"{path}:{number}")
            entries.append(entry)
    return entries


def default_private_folder(output: str) -> str:
    """Where the registry goes unless told: beside the output folder, never inside it."""
    out = os.path.abspath(output).rstrip(os.sep)
    return out + ".private"


def check_private_folder(private: str, output: str) -> Optional[str]:
    """An error text when the private folder would sit inside the output (or the reverse)."""
    p, o = os.path.abspath(private), os.path.abspath(output)
    if p == o or p.startswith(o + os.sep) or o.startswith(p + os.sep):
        return "the private registry folder must be outside the de-identified output (and not contain it)"
    return None
