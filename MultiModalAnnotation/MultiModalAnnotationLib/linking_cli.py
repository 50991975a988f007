"""``mmanno`` subcommands for image-text links and structured data (R-8.4.2, R-8.4.3).

* ``mmanno text split REPORT.txt [--json OUT]`` - sentences with ``index``, ``start``, ``end``
  (Unicode code points, end exclusive) and ``text``; the report's SHA-256 and language;
* ``mmanno link check PACKAGE|DOC.json [--update OUT.json] [--json OUT]`` - the consistency aids on
  every link of an export package (or a document with its mask files beside it); exit 1 when a
  link is inconsistent or stale;
* ``mmanno table import FILE.csv|xlsx --fields DEFS.json|ID --out TABLE.json [--sheet S] [--id ID]``
  - every value validated (row and column named on error);
* ``mmanno table bind TABLE.json DOC.json --case-id ID [--accession A]... [--image-date D] [--task T]
  --out OUT.json`` - the case's records into the document's ``structured_data``, with the
  time-deviation tag against the task's threshold (default 90 days);
* ``mmanno table export TABLE.json|DOC.json --out FILE.csv|xlsx [--table ID]`` - back to a sheet; from
  a document the seed 001 clinical table takes X/Y/Z from its point annotations and the seed 004
  score sheet its scores from the RA attribute annotations.

Heavy libraries (jsonschema, openpyxl, scipy, nibabel) are imported inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

from RTSSBridgeLib.cliutil import EXIT_FAILED_CHECK, EXIT_OK, add_json_option, emit_json
from RTSSBridgeLib.errors import InputError

if TYPE_CHECKING:
    from .structured import FieldDefinitions, Table

SPLIT_SCHEMA = "report-sentences"
CHECK_SCHEMA = "link-check"


def read_report_file(path: str) -> str:
    """The text of a report file: UTF-8 (a byte-order mark is dropped; offsets count the text after it)."""
    source = Path(path)
    if not source.is_file():
        raise InputError("does not exist or is not a file", file=path)
    try:
        text = source.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"is not UTF-8 text (byte {exc.start}); rule: reports are UTF-8", file=path) from None
    if not text.strip():
        raise InputError("is empty; rule: a report has text", file=path)
    return text


def split_result(text: str, file_name: str) -> Dict[str, Any]:
    """The ``report-sentences/v1`` JSON of a report text."""
    from .reports_text import OFFSET_UNIT, detect_language, sha256_text, split_sentences
    from .schemas import schema_id

    return {"schema": schema_id(SPLIT_SCHEMA), "file": file_name, "sha256": sha256_text(text),
            "language": detect_language(text), "offset_unit": OFFSET_UNIT, "length": len(text),
            "sentences": [s.to_dict() for s in split_sentences(text)]}


def _cmd_text_split(args: argparse.Namespace) -> int:
    text = read_report_file(args.report)
    result = split_result(text, Path(args.report).name)
    emit_json(args.json, result)
    if args.json != "-":
        for s in result["sentences"]:
            print(f"{s['index']:>3} {s['start']:>6}-{s['end']:<6} {s['text']}")
        print(f"{args.report}: {len(result['sentences'])} sentence(s), {result['language']}, "
              f"sha256 {result['sha256'][:12]}")
    return EXIT_OK


def _load_for_check(path: str) -> Any:
    """(document, template, masks, task threshold) of a package or of a document JSON."""
    import numpy as np

    from .documents import read_document, resolve_inside
    from .templates import load_template

    target = Path(path)
    if target.is_dir() or target.suffix.lower() == ".zip":
        from .package import read_package

        package = read_package(target)
        return package.document, package.template, {k: m.voxels for k, m in package.masks.items()}
    document = read_document(path)
    template = load_template(document.template_id)
    masks: Dict[str, Any] = {}
    for item in document.annotations:
        if item.type == "mask" and item.mask_file:
            from RTSSBridgeLib.nifti import read_nifti

            image = read_nifti(resolve_inside(target.parent, item.mask_file))
            value = item.data.get("mask_value")
            masks[item.id] = np.ascontiguousarray(image.voxels == value if value is not None else image.voxels != 0)
    return document, template, masks


def _cmd_link_check(args: argparse.Namespace) -> int:
    from .consistency import check_links
    from .documents import write_document
    from .links import link_findings, report_links_of
    from .schemas import schema_id

    document, template, masks = _load_for_check(args.package)
    if not report_links_of(document).links:
        raise InputError("the document has no image-text links (report_links)", file=args.package,
                         field="report_links")
    checked, results = check_links(document, template, masks)
    findings = link_findings(checked)
    counts: Dict[str, int] = {}
    for r in results:
        counts[r.state] = counts.get(r.state, 0) + 1
    stale = sum(1 for r in results if r.anchor_state == "stale")
    result: Dict[str, Any] = {"schema": schema_id(CHECK_SCHEMA), "input": Path(args.package).name,
                              "counts": {"links": len(results), "consistent": counts.get("consistent", 0),
                                         "inconsistent": counts.get("inconsistent", 0),
                                         "unchecked": counts.get("unchecked", 0), "stale": stale},
                              "links": [r.to_dict() for r in results], "findings": findings}
    if args.update:
        write_document(args.update, checked)
        result["updated_document"] = Path(args.update).name
    emit_json(args.json, result)
    if args.json != "-":
        for r in results:
            print(f"{r.link_id:<14} -> {r.target:<16} {r.state:<12} ({r.source}) {r.note}")
        c = result["counts"]
        print(f"{args.package}: {c['links']} link(s): {c['consistent']} consistent, {c['inconsistent']} "
              f"inconsistent, {c['unchecked']} unchecked, {c['stale']} stale")
    return EXIT_FAILED_CHECK if counts.get("inconsistent") or stale else EXIT_OK


def load_fields(spec: str) -> FieldDefinitions:
    """Field definitions from a file or a built-in id (``seed001-clinical`` ...)."""
    from .structured import builtin_field_definitions, read_field_definitions

    if Path(spec).is_file() or spec.endswith(".json"):
        return read_field_definitions(spec)
    return builtin_field_definitions(spec)


def _cmd_table_import(args: argparse.Namespace) -> int:
    from RTSSBridgeLib.fileio import write_json_atomic

    from .structured import read_table

    table = read_table(args.file, load_fields(args.fields), table_id=args.id, sheet=args.sheet)
    write_json_atomic(args.out, table.to_dict())
    flagged = sum(1 for r in table.records if r.flags)
    result = {"command": "table import", "file": Path(args.file).name, "table": table.id,
              "fields": table.fields.id, "columns": len(table.columns), "records": len(table.records),
              "records_outside_normal_range": flagged, "out": Path(args.out).name}
    emit_json(args.json, result)
    if args.json != "-":
        print(f"{args.file}: {len(table.records)} record(s), {len(table.columns)} column(s) valid against "
              f"{table.fields.id}; {flagged} with values outside the normal range -> {args.out}")
    return EXIT_OK


def _cmd_table_bind(args: argparse.Namespace) -> int:
    import datetime as dt

    from .documents import read_document, write_document
    from .structured import DEFAULT_TIME_DEVIATION_DAYS, CaseKeys, ImageKey, add_table, read_table_json

    table = read_table_json(args.table)
    document = read_document(args.document)
    threshold = DEFAULT_TIME_DEVIATION_DAYS
    if args.task:
        from .tasks import read_task

        threshold = read_task(args.task).qc.time_deviation_days
    date = ""
    if args.image_date:
        try:
            date = dt.date.fromisoformat(args.image_date).isoformat()
        except ValueError:
            raise InputError(f"{args.image_date!r} is not a date YYYY-MM-DD", field="--image-date") from None
    accessions = args.accession or [""]
    images = tuple(ImageKey(document.image.uid, a, date) for a in accessions)
    bound = add_table(document, table, CaseKeys(args.case_id, images), threshold)
    write_document(args.out, bound)
    records = next(t for t in (bound.structured_data or {})["tables"] if t["id"] == table.id)["records"]
    tagged = [r["id"] for r in records if (r.get("time_deviation") or {}).get("tag")]
    result = {"command": "table bind", "table": table.id, "case_records": len(records),
              "time_deviation_days": threshold, "time_deviation_tagged": tagged, "out": Path(args.out).name}
    emit_json(args.json, result)
    if args.json != "-":
        print(f"{args.table}: {len(records)} record(s) of the case bound to {args.out}; "
              f"{len(tagged)} tagged for time deviation (> {threshold} days)")
    return EXIT_OK


def _table_for_export(path: str, table_id: str) -> Table:
    from .documents import document_from_dict, normalise_flat_annotations
    from .schemas import read_json
    from .structured import Table, table_from_document

    data = read_json(path)
    if isinstance(data, dict) and str(data.get("schema", "")).endswith("/structured-table/v1"):
        return Table.from_dict(data, file=path)
    if not isinstance(data, dict) or "annotations" not in data:
        raise InputError("is neither a table JSON (structured-table/v1) nor an annotation document", file=path)
    document = document_from_dict(normalise_flat_annotations(data), file=path)
    tables: List[str] = [t["id"] for t in (document.structured_data or {}).get("tables", [])]
    if not table_id:
        if len(tables) != 1:
            raise InputError(f"the document holds {len(tables)} tables ({', '.join(tables) or 'none'}); "
                             "choose one with --table", file=path, field="--table")
        table_id = tables[0]
    from .seed_tables import CLINICAL, MTSS, export_seed001_clinical, export_seed004_scores

    if table_id == CLINICAL:
        return export_seed001_clinical(document)
    if table_id == MTSS:
        return export_seed004_scores(document)
    return table_from_document(document, table_id)


def _cmd_table_export(args: argparse.Namespace) -> int:
    from .structured import write_table

    table = _table_for_export(args.source, args.table or "")
    write_table(args.out, table)
    result = {"command": "table export", "source": Path(args.source).name, "table": table.id,
              "records": len(table.records), "out": Path(args.out).name}
    emit_json(args.json, result)
    if args.json != "-":
        print(f"{args.source}: table {table.id}, {len(table.records)} record(s) -> {args.out}")
    return EXIT_OK


def register(subparsers: Any) -> None:
    text = subparsers.add_parser("text", help="report text: split into sentences",
                                 description="Report text (R-8.4.2.3).")
    tsub = text.add_subparsers(dest="text_command", metavar="ACTION")
    tsub.required = True
    p = tsub.add_parser("split", help="split a report into sentences with code-point offsets",
                        description="Split a UTF-8 report (Chinese, English or mixed) at 。！？；.!?; and line breaks, "
                                    "keeping decimals, abbreviations and list numbers whole. Offsets are Unicode code "
                                    "points, end exclusive (a byte-order mark is not counted).")
    p.add_argument("report", metavar="REPORT.txt", help="UTF-8 report text")
    add_json_option(p)
    p.set_defaults(func=_cmd_text_split, command="text split")

    link = subparsers.add_parser("link", help="image-text links: check consistency",
                                 description="Image-text links (R-8.4.2).")
    lsub = link.add_subparsers(dest="link_command", metavar="ACTION")
    lsub.required = True
    p = lsub.add_parser("check", help="run the consistency aids on every link",
                        description="Compare each linked fragment's sizes, sides, places and enhancement words with "
                                    "its region; a mismatch is proposed 'inconsistent' for a person to confirm (a "
                                    "person's decision is kept). Exit 1 when a link is inconsistent or stale, 2 when "
                                    "the input cannot be read.")
    p.add_argument("package", metavar="PACKAGE|DOC.json", help="export package (folder or zip) or annotation JSON")
    p.add_argument("--update", metavar="OUT.json", help="write the document with the new proposals")
    add_json_option(p)
    p.set_defaults(func=_cmd_link_check, command="link check")

    table = subparsers.add_parser("table", help="structured data tables: import, export",
                                  description="Clinical tables (R-8.4.3): CSV/XLSX against field definitions.")
    bsub = table.add_subparsers(dest="table_command", metavar="ACTION")
    bsub.required = True
    p = bsub.add_parser("import", help="read and validate a CSV/XLSX table",
                        description="Validate every value against the field definitions (type, allowed values, "
                                    "ranges, dates); an invalid value is reported with its row and column. Writes "
                                    "the table JSON (structured-table/v1).")
    p.add_argument("file", metavar="FILE", help=".csv (UTF-8) or .xlsx")
    p.add_argument("--fields", required=True, metavar="DEFS.json|ID",
                   help="field definitions file or built-in id (seed001-clinical, seed001-follow-up, seed004-mtss)")
    p.add_argument("--out", required=True, metavar="OUT.json", help="table JSON to write (atomically)")
    p.add_argument("--sheet", help="XLSX sheet name (default: the first)")
    p.add_argument("--id", help="table id (default: the field definitions' id)")
    add_json_option(p)
    p.set_defaults(func=_cmd_table_import, command="table import")
    p = bsub.add_parser("bind", help="bind the case's records to an annotation document",
                        description="Keep the records of the case (case ID; accession numbers or the image UID when "
                                    "the table has such keys), refuse duplicate keys, tag records whose exam date is "
                                    "more than the task's time-deviation threshold from the image date, and write "
                                    "the document with its structured_data section.")
    p.add_argument("table", metavar="TABLE.json", help="table JSON written by 'table import'")
    p.add_argument("document", metavar="DOC.json", help="annotation document")
    p.add_argument("--case-id", required=True, help="case ID (pseudonym) of the document's case")
    p.add_argument("--accession", action="append", help="accession number of an image of the case (repeatable)")
    p.add_argument("--image-date", help="acquisition date of the image, YYYY-MM-DD (for the time-deviation tag)")
    p.add_argument("--task", help="task JSON whose qc.time_deviation_days is the threshold (default 90)")
    p.add_argument("--out", required=True, metavar="OUT.json", help="document to write (atomically)")
    add_json_option(p)
    p.set_defaults(func=_cmd_table_bind, command="table bind")
    p = bsub.add_parser("export", help="write a table back to CSV/XLSX",
                        description="From a table JSON, or from an annotation document's structured data (seed 001 "
                                    "clinical: X/Y/Z from the point annotations; seed 004: scores from the RA "
                                    "attribute annotations).")
    p.add_argument("source", metavar="TABLE.json|DOC.json", help="table JSON or annotation document")
    p.add_argument("--out", required=True, metavar="FILE", help=".csv or .xlsx to write (atomically)")
    p.add_argument("--table", help="table id inside a document")
    add_json_option(p)
    p.set_defaults(func=_cmd_table_export, command="table export")
