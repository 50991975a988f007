"""``mmanno deid``: de-identify a folder, check an output for leaks, make a key (R-6.4, R-7.3).

::

    mmanno deid IN OUT --profile NAME --key KEYFILE [--registry DIR] [--retain-...] [--json [OUT]]
    mmanno deid verify OUT --original IN [--images] [--json [OUT]]
    mmanno deid keygen KEYFILE
    mmanno deid profiles [--json [OUT]]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

from .. import resources
from ..cliutil import EXIT_BAD_INPUT, EXIT_FAILED_CHECK, EXIT_OK, Parser, Progress, add_json_option, emit_json, fail
from ..errors import InputError

_OPTION_FLAGS = (
    ("--retain-modified-dates", "retain_longitudinal_modified_dates",
     "PS3.15 Retain Longitudinal Temporal Information Modified Dates Option: dates move by a keyed per-patient offset"),
    ("--retain-full-dates", "retain_longitudinal_full_dates",
     "PS3.15 Retain Longitudinal Temporal Information Full Dates Option: dates are kept"),
    ("--retain-patient-characteristics", "retain_patient_characteristics",
     "PS3.15 Retain Patient Characteristics Option: sex, age, size, weight, ethnic group ... kept"),
    ("--retain-device-identity", "retain_device_identity",
     "PS3.15 Retain Device Identity Option: station name, device serial numbers ... are kept"),
)
_SUBCOMMANDS = ("verify", "keygen", "profiles")


class _DeidParser(Parser):
    """``mmanno deid`` takes IN OUT, or a subcommand word first (verify, keygen, profiles)."""

    sub_parsers: ClassVar[Dict[str, Parser]] = {}

    def parse_known_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                         namespace: Optional[argparse.Namespace] = None) -> Tuple[argparse.Namespace, List[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        if argv and argv[0] in self.sub_parsers:
            return self.sub_parsers[argv[0]].parse_known_args(argv[1:], namespace)
        return super().parse_known_args(argv, namespace)


def _cmd_deid(args: argparse.Namespace) -> int:
    from .batch import deidentify_folder

    if not args.profile:
        return fail("deid", "--profile NAME is required (built-in: " + ", ".join(builtin_profiles()) + ")")
    if not args.key:
        return fail("deid", "--key KEYFILE is required (make one with 'mmanno deid keygen KEYFILE')")
    options = [name for flag, name, _ in _OPTION_FLAGS if getattr(args, flag[2:].replace("-", "_"))]
    try:
        result = deidentify_folder(args.input, args.output, args.profile, args.key, options=options,
                                   private_folder=args.registry, workers=args.workers,
                                   progress=Progress("de-identifying", enabled=not args.quiet))
    except InputError as exc:
        return fail("deid", str(exc))
    emit_json(args.json, result)
    if args.json != "-":
        counts = result["counts"]
        print(f"de-identified {counts['written']} of {counts['files_in']} file(s) with profile "
              f"{result['profile']['name']} {result['profile']['version']} (key {result['key_fingerprint']}): "
              f"{counts['cases']} case(s), {counts['series']} series -> {result['output']}")
        for reason, n in counts["skipped_by_reason"].items():
            print(f"  not written: {n} file(s) {reason}")
        if result["burned_in_annotation"]:
            print(f"  WARNING: {len(result['burned_in_annotation'])} file(s) may have burned-in annotation "
                  "(pixels not cleaned; see deid-record.json)")
        print(f"  registry and operations log (private, owner-only): {result['private_folder']}")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import compare_series, verify_output

    try:
        report = verify_output(args.output, args.original, progress=Progress("checking", enabled=not args.quiet))
        if args.images:
            report_images = compare_series(args.original, args.output)
        else:
            report_images = None
    except InputError as exc:
        return fail("deid verify", str(exc))
    result: Any = dict(report)
    if report_images is not None:
        result = {**report, "images": report_images}
    emit_json(args.json, result)
    if args.json != "-":
        print(f"scanned {report['elements_scanned']} elements in {report['output_dicom_files']} DICOM file(s) "
              f"(+{report['output_files'] - report['output_dicom_files']} other): {report['n_leaks']} leak(s)")
        for leak in report["leaks"][:50]:
            print(f"  LEAK {leak['category']}: {leak['file']} {leak['tag_path']} {leak['keyword']} "
                  f"(matches the original {leak['matches']})")
        if report["n_leaks"] > 50:
            print(f"  ... {report['n_leaks'] - 50} more (see --json)")
        if report["retained_by_declared_option"]:
            print(f"  {len(report['retained_by_declared_option'])} value(s) retained under a declared option "
                  "(Retain Device Identity)")
        if report_images is not None:
            print(f"images: {report_images['matched']} of {report_images['original_series']} series with the same "
                  f"geometry and voxels")
    passed = report["passed"] and (report_images is None or report_images["passed"])
    return EXIT_OK if passed else EXIT_FAILED_CHECK


def _cmd_keygen(args: argparse.Namespace) -> int:
    from .keys import generate_key_file

    try:
        fingerprint = generate_key_file(args.keyfile)
    except InputError as exc:
        return fail("deid keygen", str(exc))
    emit_json(args.json, {"key_file": os.path.abspath(args.keyfile), "key_fingerprint": fingerprint})
    if args.json != "-":
        print(f"wrote a new 256-bit key to {args.keyfile} (mode 0600, fingerprint {fingerprint}); keep it apart "
              "from the data: whoever has it can recompute the pseudonyms")
    return EXIT_OK


def builtin_profiles() -> List[str]:
    return resources.builtin_names(*resources.DEID_PROFILES)


def _cmd_profiles(args: argparse.Namespace) -> int:
    from .profile import load_profile_document

    rows = []
    for name in builtin_profiles():
        doc = load_profile_document(name)
        rows.append({"name": name, "version": doc["version"], "title": doc["title"], "base": doc.get("base"),
                     "options": doc.get("options", []), "rows": len(doc["attributes"])})
    emit_json(args.json, rows)
    if args.json != "-":
        for r in rows:
            print(f"{r['name']:16} {r['version']:8} {r['title']} ({r['rows']} rows"
                  + (f", on {r['base']}" if r["base"] else "") + ")")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``mmanno deid`` (with ``verify``, ``keygen``, ``profiles``)."""
    p = subparsers.add_parser(
        "deid", help="de-identify DICOM data (and: deid verify, deid keygen, deid profiles)",
        usage="mmanno deid IN OUT --profile NAME --key KEYFILE [options]\n"
              "       mmanno deid verify OUT --original IN [--images] [--json [OUT]]\n"
              "       mmanno deid keygen KEYFILE\n"
              "       mmanno deid profiles [--json [OUT]]",
        description="Write a de-identified copy of every DICOM file below IN into the new folder OUT, following a "
                    "profile (basic = DICOM PS3.15 Basic Application Level Confidentiality Profile; brain-mets-mr = "
                    "seed 002 tables 5-1/5-2; ra-xray = seed 004 table 5-1; or a profile file). UIDs and IDs become "
                    "keyed pseudonyms (same key, same pseudonyms), every private tag goes, dates move per patient, "
                    "pixel data is copied untouched. The real-to-pseudonym registry and the operations log go to a "
                    "private folder outside OUT. 'deid verify' checks an output for leaks; 'deid keygen' makes a key.",
    )
    p.__class__ = _DeidParser
    p.add_argument("input", metavar="IN", help="input folder (searched recursively) or DICOM file; never modified")
    p.add_argument("output", metavar="OUT", help="new (or empty) output folder, written atomically")
    p.add_argument("--profile", help="profile name (" + "basic, brain-mets-mr, ra-xray" + ") or profile JSON file")
    p.add_argument("--key", metavar="KEYFILE", help="secret key file (make one with 'mmanno deid keygen KEYFILE')")
    p.add_argument("--registry", metavar="DIR", default=None,
                   help="private folder for the pseudonym registry and the operations log (default OUT.private)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: number of cores)")
    for flag, _, help_text in _OPTION_FLAGS:
        p.add_argument(flag, action="store_true", help=help_text)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(p, "write the de-identification record (counts, cases, series; no real identifiers) as JSON")
    p.set_defaults(func=_cmd_deid)

    v = Parser(prog="mmanno deid verify",
               description="Scan every element of every file below OUT (file meta and nested sequences included) "
                           "for any identifying value of the original files below IN: names, IDs, birth dates, "
                           "accession numbers, institution, physicians, addresses, telephone, free-text comments, "
                           "device identifiers and instance UIDs. Each leak is listed with file, tag path and "
                           "category, never with the value. Exit 0 when there is no leak, 1 otherwise.")
    v.add_argument("output", metavar="OUT", help="de-identified folder (of mmanno or any other tool)")
    v.add_argument("--original", metavar="IN", required=True, help="the original (identified) folder")
    v.add_argument("--images", action="store_true",
                   help="also check that every original series has an output series with the same geometry and "
                        "bit-identical voxels")
    v.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(v)
    v.set_defaults(func=_cmd_verify, command="deid verify")

    k = Parser(prog="mmanno deid keygen", description="Write a new random 256-bit key (hexadecimal) to KEYFILE with "
                                                      "owner-only permissions; an existing file is never overwritten.")
    k.add_argument("keyfile", metavar="KEYFILE", help="new key file")
    add_json_option(k)
    k.set_defaults(func=_cmd_keygen, command="deid keygen")

    lp = Parser(prog="mmanno deid profiles", description="List the built-in de-identification profiles.")
    add_json_option(lp)
    lp.set_defaults(func=_cmd_profiles, command="deid profiles")
    p.sub_parsers = {"verify": v, "keygen": k, "profiles": lp}


__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED_CHECK", "register"]
