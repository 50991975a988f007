"""No identifying patient value in a provenance record (R-5.1, R-5.5, R-5.6).

Every text that enters an audit event (actor, reason, comments, object ids, the strings of its
details) passes :meth:`PrivacyGuard.check`, which refuses:

* actors that are not pseudonymous ids (``A01``, ``R-02``, ``qc.lead``: letters, digits, ``_ . -``,
  at most 64) - a person's full name with a space, a ``^`` or Chinese characters is refused;
* text with the shape of an identifier whatever the case: a DICOM person name
  (``FAMILY^GIVEN``), a mainland-China resident identity number (18 characters with a valid
  ISO 7064 check digit), a mobile phone number (``1[3-9]`` + 9 digits), an e-mail address;
* when the case's identifying values are known (:meth:`PrivacyGuard.from_originals` reads them
  from the original DICOM files and sample manifests with the leak checker's own collector,
  :func:`RTSSBridgeLib.deid.verify.collect_identifying_values`): any of their tokens (names in
  every spelling, IDs, birth dates, addresses, telephone numbers, free text) and any original UID.

The refusal names the field and the category, never the value. Nothing identifying is stored by
the guard: the values live only in memory, for the process that was given the originals.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, List, Optional

from RTSSBridgeLib.errors import InputError

#: Pseudonymous ids of people and software (actors): what the task schema allows for people.
ACTOR_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PERSON_NAME = re.compile(r"[A-Za-z\u3400-\u9fff]{2,}\^[A-Za-z\u3400-\u9fff]{1,}")
_RESIDENT_ID = re.compile(r"(?<![0-9])[1-9][0-9]{16}[0-9Xx](?![0-9])")
_MOBILE = re.compile(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")
#: A SHA-256 digest (versions, objects): random hex that may by chance hold 18 digits.
_DIGEST = re.compile(r"[0-9a-f]{64}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
#: Categories of the leak checker that identify a patient (device and institution do not).
PATIENT_CATEGORIES = ("name", "id", "birth_date", "address", "telephone", "free_text")


class PrivacyError(InputError):
    """A text meant for the audit trail looks like or contains an identifying patient value.
    Remedy: use pseudonymous ids and describe the problem without names, IDs or dates of birth."""


def _resident_id_valid(text: str) -> bool:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip(text[:17], weights))
    return "10X98765432"[total % 11] == text[17].upper()


class PrivacyGuard:
    """Refuses identifying values in provenance text (see the module docstring)."""

    def __init__(self, identifying: Any = None) -> None:
        #: :class:`RTSSBridgeLib.deid.verify.IdentifyingValues` of the case, or None when unknown.
        self.identifying = identifying

    @classmethod
    def from_originals(cls, folder: str) -> PrivacyGuard:
        """The identifying values of the original (not de-identified) files below ``folder``."""
        from RTSSBridgeLib.deid.verify import collect_identifying_values

        return cls(collect_identifying_values(folder))

    @property
    def knows_case_values(self) -> bool:
        return self.identifying is not None

    def check_actor(self, actor: str, field: str = "actor") -> str:
        if not isinstance(actor, str) or not ACTOR_PATTERN.match(actor):
            raise PrivacyError(f"{actor!r} is not a pseudonymous id (letters, digits, '_', '.', '-'; at most 64); "
                               "rule: the trail names people by pseudonymous ids only", field=field)
        self.check_text(actor, field)
        return actor

    def problem(self, text: str) -> Optional[str]:
        """Why ``text`` may not enter the trail (the category, never the value), or None."""
        if _DIGEST.fullmatch(text):
            return None
        if _PERSON_NAME.search(text):
            return "it has the form of a DICOM person name (FAMILY^GIVEN)"
        for match in _RESIDENT_ID.finditer(text):
            if _resident_id_valid(match.group(0)):
                return "it contains a resident identity number"
        if _MOBILE.search(text):
            return "it contains a mobile phone number"
        if _EMAIL.search(text):
            return "it contains an e-mail address"
        if self.identifying is not None:
            from RTSSBridgeLib.deid.verify import compact

            pattern = self.identifying.pattern()
            if pattern is not None:
                for match in pattern.finditer(compact(text)):
                    category, attribute = self.identifying.tokens[match.group(0)]
                    if category in PATIENT_CATEGORIES:
                        return f"it contains the case's {category.replace('_', ' ')} (as in {attribute})"
            words = set(re.split(r"[\s,;()\[\]{}\"']+", text))
            if words & self.identifying.uids:
                return "it contains an original (not de-identified) DICOM UID"
        return None

    def check_text(self, text: str, field: str) -> str:
        reason = self.problem(text)
        if reason:
            raise PrivacyError(f"refused: {reason}; rule: no identifying patient value in the audit trail "
                               "(R-5.5)", field=field)
        return text

    def check_value(self, value: Any, field: str) -> None:
        """Every string inside ``value`` (dicts, lists), keys included."""
        for where, text in _strings(value, field):
            self.check_text(text, where)


def _strings(value: Any, where: str) -> Iterable[tuple]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{where}.{key}", str(key)
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for n, item in enumerate(value):
            yield from _strings(item, f"{where}[{n}]")


def problems_in_trail_text(texts: Iterable[str], guard: PrivacyGuard) -> List[str]:
    """Every text of ``texts`` the guard refuses (reasons only), for audits of existing trails."""
    return [reason for reason in (guard.problem(t) for t in texts) if reason]
