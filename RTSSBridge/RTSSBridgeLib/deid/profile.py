"""De-identification profiles: JSON files turned into a per-tag action table (R-7.3).

A profile (schema ``deid-profile``) is data: ``basic`` encodes DICOM PS3.15 Table E.1-1 row by
row with its option columns; the seed profiles ``brain-mets-mr`` (seed 002 tables 5-1 and 5-2)
and ``ra-xray`` (seed 004 table 5-1) name ``basic`` as their base, select the options their cards
tick and override rows. :func:`compile_profile` resolves all of that once into a
:class:`CompiledProfile`: a dictionary from tag to :class:`Act`, per-modality overrides, the
repeating-group rules and the defaults for attributes no row names.

Resolution of PS3.15 codes (the standard leaves a choice for the compound codes; we take the
least destructive one that still removes the value): K keep, X remove, Z blank, D dummy, U keyed
UID, C clean; Z/D, X/Z and X/Z/D blank; X/D dummy; X/Z/U* keyed UID for UIDs, blank otherwise.
Among the selected options, a K wins over a C, and either wins over the basic code. Clean means:
dates follow the profile's date policy, times are kept, sequences are de-identified item by item,
UIDs are replaced, free text is removed (this project has no text cleaner, so nothing is kept
that could not be checked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from .. import resources
from ..errors import InputError
from ..jsonschemas import read_json
from .rawdicom import dictionary_vr

SCHEMA = "deid-profile"
BUILTIN_FOLDER = resources.DEID_PROFILES

#: Options this engine carries out (PS3.15 E.3); the profile table holds every option column.
SUPPORTED_OPTIONS = ("retain_longitudinal_full_dates", "retain_longitudinal_modified_dates",
                     "retain_patient_characteristics", "retain_device_identity")
#: CID 7050 codes written to De-identification Method Code Sequence (0012,0064).
METHOD_CODES: Dict[str, Tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "retain_longitudinal_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_longitudinal_modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
}
#: What an option retains, in the words of the leak check (``deid verify`` reads it from the record).
RETAINED_CATEGORIES: Dict[str, str] = {"retain_device_identity": "device"}


class Act(IntEnum):
    """What happens to one element (small integers: looked up once per element)."""

    KEEP = 0
    REMOVE = 1
    BLANK = 2
    DUMMY = 3
    PSEUDONYMISE = 4  # keyed UID for UI, keyed pseudonym otherwise
    SHIFT_DATE = 5  # per-patient keyed offset
    GENERALISE_DATE = 6  # offset, then truncated to year or month
    CLEAN = 7  # resolved by VR when applied (see module docstring)


_NAMED = {"keep": Act.KEEP, "remove": Act.REMOVE, "blank": Act.BLANK, "dummy": Act.DUMMY,
          "pseudonymise": Act.PSEUDONYMISE, "shift_date": Act.SHIFT_DATE, "generalise_date": Act.GENERALISE_DATE,
          "clean": Act.CLEAN}
_CODES = {"K": Act.KEEP, "X": Act.REMOVE, "Z": Act.BLANK, "D": Act.DUMMY, "U": Act.PSEUDONYMISE, "C": Act.CLEAN,
          "Z/D": Act.BLANK, "X/Z": Act.BLANK, "X/D": Act.DUMMY, "X/Z/D": Act.BLANK}


@dataclass(frozen=True)
class PseudonymFormat:
    """``prefix`` (or the original's leading letters) followed by ``digits`` keyed digits."""

    prefix: str
    digits: int
    keep_leading_letters: bool = False


@dataclass(frozen=True)
class Rule:
    """The resolved action of one tag, with where it came from (for the tests and the record)."""

    act: Act
    pseudonym: str = "other"
    origin: str = ""


@dataclass
class CompiledProfile:
    """A profile resolved to tables (picklable: worker processes receive it once)."""

    name: str
    version: str
    title: str
    options: Tuple[str, ...]
    rules: Dict[int, Rule]
    modality_rules: Dict[str, Dict[int, Rule]]
    repeating: List[Tuple[int, int, Rule]]  # (mask, value, rule): tag & mask == value
    date_default: Act
    all_dates: Optional[Act]  # a seed row for every date: applies to DA/DT no own row names
    own_tags: FrozenSet[int]  # tags named by rows of this profile (not of its base)
    person_name_default: Act
    unknown_public: Act
    shift_days: Tuple[int, int]
    generalise: Optional[str]
    pseudonyms: Dict[str, PseudonymFormat]
    patient_name_template: str
    method_description: Tuple[str, ...]
    method_codes: Tuple[Tuple[str, str], ...]
    burned_in: str
    retained_categories: Tuple[str, ...]
    source_rows: List[Dict[str, Any]] = field(default_factory=list)

    def rule_for(self, tag: int, modality: str = "") -> Optional[Rule]:
        """The rule a row gives ``tag`` (modality overrides first), or None."""
        if modality:
            special = self.modality_rules.get(modality)
            if special is not None:
                rule = special.get(tag)
                if rule is not None:
                    return rule
        rule = self.rules.get(tag)
        if rule is not None:
            return rule
        for mask, value, repeat in self.repeating:
            if tag & mask == value:
                return repeat
        return None

    @property
    def modifies_dates(self) -> bool:
        return "retain_longitudinal_modified_dates" in self.options or self.all_dates is not None


def builtin_profiles() -> List[str]:
    """Names of the profiles shipped in ``Resources/profiles/deid``."""
    return resources.builtin_names(*BUILTIN_FOLDER)


def profile_path(name_or_path: str) -> str:
    """The file of a built-in profile name, or ``name_or_path`` itself when it is a file."""
    return resources.builtin_or_file(name_or_path, BUILTIN_FOLDER, "de-identification")


def load_profile_document(name_or_path: str) -> Dict[str, Any]:
    """The profile JSON (validated against the schema)."""
    document: Dict[str, Any] = read_json(profile_path(name_or_path), SCHEMA)
    return document


def _tag_pattern(text: str) -> Tuple[int, int]:
    """(mask, value) of an 8-digit tag where X matches any hexadecimal digit."""
    mask = value = 0
    for ch in text:
        mask <<= 4
        value <<= 4
        if ch != "X":
            mask |= 0xF
            value |= int(ch, 16)
    return mask, value


def _resolve_code(row: Dict[str, Any], options: Sequence[str]) -> Act:
    codes = [row.get("options", {}).get(o) for o in options]
    if "K" in codes:
        return Act.KEEP
    if "C" in codes:
        return Act.CLEAN
    action = str(row["action"])
    if action == "X/Z/U*":
        return Act.PSEUDONYMISE if row.get("vr") in ("UI", "SQ") else Act.BLANK
    return _CODES[action] if action in _CODES else _NAMED[action]


def compile_profile(name_or_path: str, extra_options: Sequence[str] = (), _depth: int = 0) -> CompiledProfile:
    """Load a profile (with its base) and resolve every row for the selected options.

    Raises :class:`InputError` for an unknown profile, a schema violation, an unsupported
    option, a base cycle, or a general row with an action the engine cannot honour.
    """
    if _depth > 4:
        raise InputError("profile bases nest too deep (a cycle?)", field="base")
    path = profile_path(name_or_path)
    doc = load_profile_document(path)
    options = list(dict.fromkeys([*doc.get("options", []), *extra_options]))
    for option in options:
        if option not in SUPPORTED_OPTIONS:
            raise InputError(f"option {option!r} is not supported; supported options are "
                             f"{', '.join(SUPPORTED_OPTIONS)}", file=path, field="options")
    if "retain_longitudinal_full_dates" in options and "retain_longitudinal_modified_dates" in options:
        raise InputError("the full-dates and modified-dates options exclude each other", file=path, field="options")

    rules: Dict[int, Rule] = {}
    modality_rules: Dict[str, Dict[int, Rule]] = {}
    repeating: List[Tuple[int, int, Rule]] = []
    source_rows: List[Dict[str, Any]] = []
    if doc.get("base"):
        base = compile_profile(str(doc["base"]), options, _depth + 1)
        rules.update(base.rules)
        repeating.extend(base.repeating)
        for modality, table in base.modality_rules.items():
            modality_rules.setdefault(modality, {}).update(table)
        source_rows.extend(base.source_rows)

    own: set = set()
    for row in doc["attributes"]:
        act = _resolve_code(row, options)
        rule = Rule(act, str(row.get("pseudonym", "other")), f"{doc['name']}:{row['tag']}")
        if "X" in row["tag"]:
            mask, value = _tag_pattern(row["tag"])
            repeating.append((mask, value, rule))
            continue
        tag = int(row["tag"], 16)
        if row.get("modalities"):
            for modality in row["modalities"]:
                modality_rules.setdefault(modality, {})[tag] = rule
        else:
            rules[tag] = rule
            own.add(tag)
        source_rows.append(dict(row, profile=doc["name"]))

    all_dates: Optional[Act] = None
    for general in doc.get("general_rows", []):
        applies, action = general["applies_to"], general["action"]
        if applies == "all_instance_uids" and action != "pseudonymise":
            raise InputError("instance UIDs are always pseudonymised (R-7.3)", file=path, field="general_rows")
        if applies == "all_private_attributes" and action != "remove":
            raise InputError("private attributes are always removed (R-7.3)", file=path, field="general_rows")
        if applies == "all_dates":
            all_dates = _NAMED[action]
    if all_dates is not None:
        # the seed's "all dates" row wins over the base profile for every date its own rows leave out
        general_rule = Rule(all_dates, "other", f"{doc['name']}:all_dates")
        for tag in list(rules):
            if tag not in own and dictionary_vr(tag) in ("DA", "DT"):
                rules[tag] = general_rule

    defaults = doc.get("defaults", {})
    dates = doc.get("dates", {})
    shift = dates.get("shift_days", {"min": -3650, "max": -365})
    if shift["min"] > shift["max"]:
        raise InputError(f"min {shift['min']} is larger than max {shift['max']}", file=path, field="dates/shift_days")
    if shift["min"] <= 0 <= shift["max"]:
        raise InputError("the range must not contain 0 (a zero offset would leave real dates)", file=path,
                         field="dates/shift_days")
    formats = {kind: PseudonymFormat(str(fmt["prefix"]), int(fmt["digits"]), bool(fmt.get("keep_leading_letters")))
               for kind, fmt in doc.get("pseudonyms", {}).items() if kind != "patient_name"}
    formats.setdefault("patient_id", PseudonymFormat("MMA", 10))
    formats.setdefault("accession", PseudonymFormat("A", 10))
    formats.setdefault("other", PseudonymFormat("X", 10))
    method_codes = [METHOD_CODES["basic"]] + [METHOD_CODES[o] for o in options]
    return CompiledProfile(
        name=str(doc["name"]), version=str(doc["version"]), title=str(doc["title"]), options=tuple(options),
        rules=rules, modality_rules=modality_rules, repeating=repeating,
        date_default=_NAMED[defaults.get("dates", "clean")], all_dates=all_dates, own_tags=frozenset(own),
        person_name_default=_NAMED[defaults.get("person_names", "blank")],
        unknown_public=_NAMED[defaults.get("unknown_public", "remove")],
        shift_days=(int(shift["min"]), int(shift["max"])), generalise=dates.get("generalise"),
        pseudonyms=formats,
        patient_name_template=str(doc.get("pseudonyms", {}).get("patient_name", "{patient_id}")),
        method_description=tuple(doc.get("method_description", [f"mmanno deid {doc['name']} {doc['version']}"])),
        method_codes=tuple(method_codes), burned_in=str(doc.get("burned_in_annotation", "flag")),
        retained_categories=tuple(sorted({RETAINED_CATEGORIES[o] for o in options if o in RETAINED_CATEGORIES})),
        source_rows=source_rows,
    )
