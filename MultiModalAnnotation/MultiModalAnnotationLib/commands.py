"""``mmanno`` subcommands for templates, tasks, annotation documents and export packages.

* ``mmanno template list`` - the built-in templates;
* ``mmanno template validate FILE|ID`` - every problem on its own line (exit 1 when any);
* ``mmanno template export FILE|ID --to slicer-csv|slicer-term|dcmqi|nnunet|csv --out OUT``;
* ``mmanno template import FILE --from slicer-csv|csv --out OUT.json`` - back from a CSV;
* ``mmanno task validate FILE [--template T]``;
* ``mmanno annotation validate FILE [--template T]`` - schema, template and geometry checks;
* ``mmanno package export DOC --template T [--task F] --out DIR [--layout per_mask|labelmap] [--zip]``;
* ``mmanno package verify DIR|ZIP`` - changed, missing, extra and unsafe files (exit 1 when any).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from RTSSBridgeLib.cliutil import EXIT_FAILED_CHECK, EXIT_OK, add_json_option, emit_json
from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.fileio import write_json_atomic, write_text_atomic

from .templates import (
    LabelTemplate,
    TemplateError,
    builtin_template_ids,
    load_template,
    template_from_dict,
    template_problems,
)
from .templates.exports import (
    EXPORT_FORMATS,
    dcmqi_segmentation_metadata,
    nnunet_dataset,
    slicer_color_table_csv,
    slicer_terminology,
    template_from_slicer_csv,
)
from .templates.tables import flat_csv, template_from_flat_csv


def _report(args: argparse.Namespace, command: str, target: str, problems: List[str], extra: Dict[str, Any]) -> int:
    result = {"command": command, "file": target, "valid": not problems, "problems": problems, **extra}
    emit_json(args.json, result)
    if args.json != "-":
        for line in problems:
            print(f"{target}: {line}")
        print(f"{target}: {'valid' if not problems else f'{len(problems)} problem(s)'}")
    return EXIT_OK if not problems else EXIT_FAILED_CHECK


# --------------------------------------------------------------------------- template
def _cmd_template_list(args: argparse.Namespace) -> int:
    rows: List[Dict[str, Any]] = []
    for template_id in builtin_template_ids():
        t = load_template(template_id)
        rows.append({"id": t.id, "version": t.version, "title": t.title["en"], "modalities": list(t.modalities),
                     "labels": len(t.labels)})
    emit_json(args.json, rows)
    if args.json != "-":
        for r in rows:
            modalities = ",".join(r["modalities"])
            print(f"{r['id']:<20} {r['version']:<7} {modalities:<7} {r['labels']:>3} labels  {r['title']}")
    return EXIT_OK


def _cmd_template_validate(args: argparse.Namespace) -> int:
    target = args.template
    if os.path.exists(target) or target.endswith(".json"):
        from .schemas import read_json

        data = read_json(target)
        problems = template_problems(data)
        if not problems:
            template_from_dict(data, file=target)
    else:
        try:
            load_template(target)
            problems = []
        except TemplateError as exc:
            problems = exc.problems
    return _report(args, "template validate", target, problems, {})


def export_template(template: LabelTemplate, fmt: str, out: str, locale: str = "en") -> None:
    """Write ``template`` in format ``fmt`` (one of :data:`EXPORT_FORMATS`) to ``out`` atomically."""
    if fmt == "slicer-csv":
        write_text_atomic(out, slicer_color_table_csv(template))
    elif fmt == "slicer-term":
        write_json_atomic(out, slicer_terminology(template, locale))
    elif fmt == "dcmqi":
        write_json_atomic(out, dcmqi_segmentation_metadata(template))
    elif fmt == "nnunet":
        write_json_atomic(out, nnunet_dataset(template))
    elif fmt == "csv":
        write_text_atomic(out, flat_csv(template))
    else:
        raise InputError(f"{fmt!r} is not one of {', '.join(EXPORT_FORMATS)}", field="--to")


def _cmd_template_export(args: argparse.Namespace) -> int:
    template = load_template(args.template)
    export_template(template, args.to, args.out, args.locale)
    result = {"template": template.id, "version": template.version, "format": args.to, "out": args.out}
    emit_json(args.json, result)
    if args.json != "-":
        print(f"wrote {args.to} of {template.id} {template.version} to {args.out}")
    return EXIT_OK


def _cmd_template_import(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot be read as UTF-8 text ({exc})", file=args.file) from exc
    if args.from_format == "csv":
        template = template_from_flat_csv(text, file=args.file)
    else:
        template = template_from_slicer_csv(text, file=args.file, template_id=args.id, version=args.version,
                                            title=args.title or "", modalities=args.modality or ["OT"])
    write_json_atomic(args.out, template.to_dict())
    emit_json(args.json, {"template": template.id, "version": template.version, "labels": len(template.labels),
                          "out": args.out})
    if args.json != "-":
        print(f"wrote template {template.id} {template.version} ({len(template.labels)} labels) to {args.out}")
    return EXIT_OK


# --------------------------------------------------------------------------- task, annotation
def _optional_template(name: Optional[str], fallback_id: Optional[str]) -> Optional[LabelTemplate]:
    if name:
        return load_template(name)
    if fallback_id and fallback_id in builtin_template_ids():
        return load_template(fallback_id)
    return None


def _cmd_task_validate(args: argparse.Namespace) -> int:
    from .schemas import read_json
    from .tasks import task_from_dict, task_problems, task_problems_against_template

    data = read_json(args.file)
    problems = task_problems(data)
    checked = None
    if not problems:
        task = task_from_dict(data, file=args.file)
        template = _optional_template(args.template, task.template_id)
        if template is not None:
            checked = f"{template.id} {template.version}"
            problems += task_problems_against_template(task, template)
    return _report(args, "task validate", args.file, problems, {"template_checked": checked})


def _cmd_annotation_validate(args: argparse.Namespace) -> int:
    from .documents import DocumentError, read_document, validate_document

    explicit = load_template(args.template) if args.template else None
    try:
        document = read_document(args.file, explicit)
    except DocumentError as exc:
        return _report(args, "annotation validate", args.file, exc.problems, {"template_checked": None})
    template = explicit or _optional_template(None, document.template_id)
    problems = validate_document(document, template, Path(args.file).resolve().parent)
    checked = f"{template.id} {template.version}" if template else None
    return _report(args, "annotation validate", args.file, problems,
                   {"template_checked": checked, "annotations": len(document.annotations)})


# --------------------------------------------------------------------------- package
def _cmd_package_export(args: argparse.Namespace) -> int:
    from .documents import read_document
    from .package import export_package
    from .tasks import read_task

    template = load_template(args.template)
    document = read_document(args.document, template)
    task = read_task(args.task) if args.task else None
    out = export_package(args.out, document, template, task=task, source_dir=Path(args.document).resolve().parent,
                         layout=args.layout, as_zip=args.zip, audit=args.audit)
    emit_json(args.json, {"package": str(out), "layout": args.layout, "zip": bool(args.zip)})
    if args.json != "-":
        print(f"wrote package {out}")
    return EXIT_OK


def _cmd_package_verify(args: argparse.Namespace) -> int:
    from .package import verify_package

    report = verify_package(args.package)
    emit_json(args.json, {"package": args.package, **report.to_dict()})
    if args.json != "-":
        for line in report.lines():
            print(f"{args.package}: {line}")
        print(f"{args.package}: {'intact' if report.ok else 'DOES NOT MATCH its manifest'} "
              f"({report.n_files} files listed)")
    return EXIT_OK if report.ok else EXIT_FAILED_CHECK


def register(subparsers: Any) -> None:
    template = subparsers.add_parser("template", help="label templates: list, validate, export, import",
                                     description="Label templates (R-8.2): list the built-ins, validate a file, "
                                                 "export to Slicer/dcmqi/nnU-Net/CSV, import from CSV.")
    tsub = template.add_subparsers(dest="template_command", metavar="ACTION")
    tsub.required = True
    p = tsub.add_parser("list", help="list the built-in templates", description="List the built-in templates.")
    add_json_option(p)
    p.set_defaults(func=_cmd_template_list, command="template list")
    p = tsub.add_parser("validate", help="validate a template file or built-in id",
                        description="Report every problem of a template, one line each "
                                    "(exit 1 when there is any, 2 when the file cannot be read).")
    p.add_argument("template", metavar="FILE|ID", help="template JSON file or built-in template id")
    add_json_option(p)
    p.set_defaults(func=_cmd_template_validate, command="template validate")
    p = tsub.add_parser("export", help="export a template to a format other tools read",
                        description="slicer-csv: Slicer colour table with terminology columns; slicer-term: Slicer "
                                    "terminology (.term.json); dcmqi: itkimage2segimage metadata; nnunet: nnU-Net v2 "
                                    "dataset.json; csv: flat spreadsheet CSV (import it back with 'template import').")
    p.add_argument("template", metavar="FILE|ID", help="template JSON file or built-in template id")
    p.add_argument("--to", required=True, choices=EXPORT_FORMATS, help="output format")
    p.add_argument("--out", required=True, help="output file (written atomically)")
    p.add_argument("--locale", default="en", help="locale of display names in Slicer exports (default en)")
    add_json_option(p)
    p.set_defaults(func=_cmd_template_export, command="template export")
    p = tsub.add_parser("import", help="build a template JSON from a CSV",
                        description="Read a flat CSV (--from csv) or a Slicer colour table (--from slicer-csv) and "
                                    "write the validated template JSON.")
    p.add_argument("file", help="CSV file")
    p.add_argument("--from", dest="from_format", required=True, choices=("csv", "slicer-csv"), help="CSV kind")
    p.add_argument("--out", required=True, help="template JSON to write")
    p.add_argument("--id", default="imported", help="template id for a plain Slicer colour table")
    p.add_argument("--version", default="1.0.0", help="template version for a plain Slicer colour table")
    p.add_argument("--title", help="title for a plain Slicer colour table")
    p.add_argument("--modality", action="append", help="modality for a plain Slicer colour table (repeatable)")
    add_json_option(p)
    p.set_defaults(func=_cmd_template_import, command="template import")

    task = subparsers.add_parser("task", help="task definitions: validate",
                                 description="Task definitions (R-6.2, Appendix A).")
    ksub = task.add_subparsers(dest="task_command", metavar="ACTION")
    ksub.required = True
    p = ksub.add_parser("validate", help="validate a task file",
                        description="Schema and rule checks, then the objects against the template (--template, or "
                                    "the built-in template the task names). Exit 1 when there is a problem.")
    p.add_argument("file", help="task JSON file")
    p.add_argument("--template", help="template file or built-in id")
    add_json_option(p)
    p.set_defaults(func=_cmd_task_validate, command="task validate")

    annotation = subparsers.add_parser("annotation", help="annotation documents: validate",
                                       description="Annotation documents (Appendix B and C).")
    asub = annotation.add_subparsers(dest="annotation_command", metavar="ACTION")
    asub.required = True
    p = asub.add_parser("validate", help="validate an annotation document",
                        description="Schema; template (codes, types, attributes; --template or the built-in the "
                                    "document names); geometry (boxes, polygons, points inside the image; mask files "
                                    "inside the package and on the image grid). Exit 1 when there is a problem.")
    p.add_argument("file", help="annotation JSON (Appendix C, or Appendix B)")
    p.add_argument("--template", help="template file or built-in id")
    add_json_option(p)
    p.set_defaults(func=_cmd_annotation_validate, command="annotation validate")

    package = subparsers.add_parser("package", help="export packages: export, verify",
                                    description="Export packages (R-6.11): annotation, masks as NIfTI, template, "
                                                "task, manifest with SHA-256.")
    psub = package.add_subparsers(dest="package_command", metavar="ACTION")
    psub.required = True
    p = psub.add_parser("export", help="write a package from an annotation document",
                        description="Write a new package folder (or zip with --zip) from a document whose mask files "
                                    "are relative to it.")
    p.add_argument("document", help="annotation JSON")
    p.add_argument("--template", required=True, help="template file or built-in id")
    p.add_argument("--task", help="task JSON to include")
    p.add_argument("--out", required=True, help="new folder (or .zip with --zip)")
    p.add_argument("--layout", choices=("per_mask", "labelmap"), default="per_mask", help="mask layout")
    p.add_argument("--zip", action="store_true", help="write one zip file")
    p.add_argument("--audit", metavar="TRAIL", help="ship this audit.jsonl (verified) with the package (R-5.6)")
    add_json_option(p)
    p.set_defaults(func=_cmd_package_export, command="package export")
    p = psub.add_parser("verify", help="check a package against its manifest",
                        description="Recompute every SHA-256; report changed, missing, extra and unsafe files. "
                                    "Exit 0 when intact, 1 otherwise, 2 when it is not a package.")
    p.add_argument("package", help="package folder or zip")
    add_json_option(p)
    p.set_defaults(func=_cmd_package_verify, command="package verify")


__all__ = ["export_template", "register"]
