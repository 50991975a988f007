"""``mmanno check PATH --profile NAME --json OUT [--report OUT.html]`` (R-6.3, R-7.2, R-001)."""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Optional

from .. import resources
from ..cliutil import EXIT_FAILED_CHECK, EXIT_OK, Progress, add_json_option, emit_json, fail
from ..errors import InputError
from ..fileio import write_text_atomic


def default_quarantine(json_out: Optional[str], report_out: Optional[str]) -> Optional[str]:
    """``<report stem>.quarantine`` beside the JSON (or HTML) report; a new name when it is taken."""
    anchor = json_out if json_out not in (None, "-") else report_out
    if anchor is None:
        return None
    stem = os.path.splitext(os.path.abspath(anchor))[0]
    candidate = stem + ".quarantine"
    n = 2
    while os.path.exists(candidate) and (not os.path.isdir(candidate) or os.listdir(candidate)):
        candidate = f"{stem}.quarantine-{n}"
        n += 1
    return candidate


def _print(report: Dict[str, Any]) -> None:
    print(f"{report['verdict'].upper()}: {report['n_cases']} case(s), {report['n_cases_admitted']} admitted, "
          f"{report['n_blocking']} blocking finding(s) (profile {report['profile']['name']})")
    for case in report["cases"]:
        print(f"  case {case['case']}: {case['verdict']} ({case['n_series']} series, {case['n_files']} files)")
        for f in case["findings"]:
            mark = "BLOCKING" if f["blocking"] else f["severity"]
            where = f" [{f['series_label']}]" if f["series_label"] else ""
            print(f"    {mark} {f['code']}{where}: {f['message']} (rule {f['clause']}: {f['rule_title']})")
    for f in report["batch_findings"]:
        mark = "BLOCKING" if f["blocking"] else f["severity"]
        print(f"  batch {mark} {f['code']}: {f['message']} (rule {f['clause']}: {f['rule_title']})")
    q = report["quarantine"]
    if q["files"]:
        print(f"  quarantined {len(q['files'])} file(s)" + (f" -> {q['folder']}" if q["folder"] else " (not copied)"))


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import run_check
    from .report import render_admission_html

    quarantine = args.quarantine or default_quarantine(args.json, args.report)
    try:
        report = run_check(args.path, args.profile, quarantine=quarantine,
                           declared_thickness_mm=args.declare_thickness,
                           progress=Progress("checking", enabled=not args.quiet))
    except InputError as exc:
        return fail("check", str(exc))
    emit_json(args.json, report)
    if args.report:
        write_text_atomic(args.report, render_admission_html(report))
    if args.json != "-":
        _print(report)
    return EXIT_FAILED_CHECK if report["verdict"] == "rejected" else EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``mmanno check``."""
    p = subparsers.add_parser(
        "check", help="admission check of received data: screening, quarantine and profile rules",
        description="Screen every received file (DICOM/executable polyglots, executables, scripts, archives, "
                    "non-DICOM files named .dcm, empty, oversized and truncated files are quarantined and never "
                    "loaded), then check each case and the batch against an admission profile (generic: clause 7.2; "
                    "lung-radiomics-ct: seed 001) and report every finding with its code, severity, case, series, "
                    "files and the rule it breaks. Exit 0 when admitted (possibly with warnings), 1 when a blocking "
                    "rule fails, 2 on bad input.",
    )
    p.add_argument("path", metavar="PATH", help="delivery folder (searched recursively) or one file")
    profiles = ", ".join(resources.builtin_names(*resources.ADMISSION_PROFILES))
    p.add_argument("--profile", default="generic",
                   help=f"admission profile: {profiles}, or a profile JSON file "
                        "(default generic)")
    p.add_argument("--report", metavar="OUT.html", default=None, help="also write the report as an HTML page")
    p.add_argument("--quarantine", metavar="DIR", default=None,
                   help="new folder receiving copies of rejected files (default: beside the --json/--report file, "
                        "named <report>.quarantine)")
    p.add_argument("--declare-thickness", type=float, default=None, metavar="MM",
                   help="declare the thick slice thickness of this batch (seed 001: thick data, e.g. 5 mm, must be "
                        "declared and uniform)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(p, "write the admission report as JSON to OUT (or to standard output)")
    p.set_defaults(func=_cmd_check)
