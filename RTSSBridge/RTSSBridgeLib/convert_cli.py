"""``mmanno rtss import|export`` and ``mmanno seg import|export``: ROI conversion on the command line (R-5.7).

Import writes a labelmap (NIfTI, the template's label values), optionally one NIfTI per ROI
(``--split``), and always a JSON sidecar beside the labelmap (``<labelmap>.json``, schema
``roi-conversion``) listing every ROI with its number, name, label value and code, voxel count and
warnings. Export takes either one labelmap and a template (``--template``), or per-ROI mask files
whose names become ROI names, and writes an RT Structure Set or a DICOM SEG referencing the image
series of ``--series``. The sidecar is written last: a labelmap without its sidecar is an
interrupted run.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, List, Optional

from .cliutil import EXIT_OK, Progress, add_json_option, emit_json, fail, load_label_set
from .errors import InputError
from .fileio import atomic_directory, write_json_atomic
from .labels import LabelSet

if TYPE_CHECKING:
    from .dicom_series import DicomSeries
    from .structures import RoiSet

# The conversion machinery (pydicom, numpy, nibabel, highdicom) is imported inside the commands:
# ``mmanno`` starts without it (Testing/test_cli.py::test_startup_imports_no_heavy_library).


def _is_nifti_path(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz"))


def sidecar_path(labelmap_path: str) -> str:
    """``labels.nii.gz`` -> ``labels.json``."""
    for ext in (".nii.gz", ".nii"):
        if labelmap_path.lower().endswith(ext):
            return labelmap_path[: -len(ext)] + ".json"
    return labelmap_path + ".json"


def _template(path: Optional[str]) -> Optional[LabelSet]:
    return load_label_set(path) if path else None


def _print_rois(result: RoiSet, stream: Any = None) -> None:
    from .roi import worst

    out = stream or sys.stdout
    for roi in result.rois:
        code = f" -> {roi.label.code}" if roi.label is not None else ""
        parts = [f"label value {roi.label_value}"] if roi.label_value is not None else []
        if roi.mask is not None:
            parts.append(f"{roi.voxel_count()} voxels")
        if roi.points_lps is not None:
            parts.append(f"{len(roi.points_lps)} points")
        parts.append(f"{roi.n_contours} contour(s)")
        out.write(f"  ROI {roi.number:>3} {roi.name!r}{code}: {', '.join(parts)}\n")
    for p in result.all_problems():
        out.write(f"  {p.line()}\n")
    level = worst(result.all_problems())
    out.write(f"  {len(result.rois)} ROI(s), {sum(1 for p in result.all_problems() if p.severity.value != 'info')} "
              f"warning(s){'' if level is None else f' (worst: {level.value})'}\n")


def _import(args: argparse.Namespace, kind: str) -> int:
    from .structures import ReferenceGrid

    command = f"{kind} import"
    progress = Progress("reading series headers", enabled=not args.quiet)
    try:
        if not _is_nifti_path(args.out):
            raise InputError("must end with .nii or .nii.gz (a NIfTI labelmap)", file=args.out, field="--out")
        label_set = _template(args.template)
        if kind == "rtss":
            from .rtss_import import import_rtss

            result = import_rtss(args.input, args.series, label_set, series_uid=args.series_uid,
                                 progress=Progress("filling ROIs", enabled=not args.quiet), processes=2)
        else:
            from .seg import import_seg

            grid = ReferenceGrid.from_series(_pick_series(args.series, args.series_uid, None, progress))
            result = import_seg(args.input, grid, label_set,
                                progress=Progress("reading frames", enabled=not args.quiet))
        from .labelmap import write_labelmap, write_split

        outputs: dict = {"labelmap": args.out, "split": None, "sidecar": sidecar_path(args.out)}
        if args.split:
            with atomic_directory(args.split) as tmp:
                write_split(result, str(tmp))
            for roi in result.rois:
                if roi.file:
                    roi.file = os.path.join(args.split, os.path.basename(roi.file))
            outputs["split"] = [r.file for r in result.rois if r.file]
        write_labelmap(result, args.out, description=f"mmanno {kind} import")
        document = result.to_dict("import", outputs)
        # The sidecar is not validated again here: jsonschema's import and the check took 0.06 s
        # of a 0.5 s RTSS import; Testing/test_convert_cli.py validates what this writes.
        write_json_atomic(outputs["sidecar"], document)
    except InputError as exc:
        return fail(command, str(exc))
    emit_json(args.json, document)
    if args.json != "-":
        print(f"imported {len(result.rois)} ROI(s) from {args.input} onto series {result.geometry.shape} -> {args.out}")
        _print_rois(result)
    return EXIT_OK


def _pick_series(folder: str, series_uid: Optional[str], mask_geometry: Any, progress: Any) -> DicomSeries:
    """The image series of ``folder`` to reference: ``--series-uid``, else the only one, else the
    one whose grid is the masks' grid (an error names the candidates when that is ambiguous)."""
    from .dicom_series import scan_dicom

    if not os.path.exists(folder):
        raise InputError("no such folder", file=folder, field="--series")
    scan = scan_dicom(folder, progress=progress)
    volumes = [s for s in scan.series if all(f.position is not None for f in s.frames)]
    if not volumes:
        raise InputError(f"holds no image series with patient geometry ({scan.n_files} file(s))", file=folder,
                         field="--series")
    if series_uid:
        chosen = [s for s in volumes if s.series_uid == series_uid]
        if not chosen:
            raise InputError(f"series {series_uid} is not in the folder (found "
                             f"{', '.join(s.series_uid for s in volumes)})", file=folder, field="--series-uid")
        return chosen[0]
    if len(volumes) == 1:
        return volumes[0]
    if mask_geometry is not None:
        fitting = [s for s in volumes if s.geometry.shape == mask_geometry.shape
                   and s.geometry.max_corner_distance_mm(mask_geometry) <= 1e-3]
        if len(fitting) == 1:
            return fitting[0]
        volumes = fitting or volumes
    names = ", ".join(f"{s.modality} {s.series_uid}" for s in volumes)
    raise InputError(f"holds {len(volumes)} image series that fit ({names}); "
                     "choose one with --series-uid", file=folder, field="--series")


def _export(args: argparse.Namespace, kind: str) -> int:
    command = f"{kind} export"
    progress = Progress("reading series headers", enabled=not args.quiet)
    try:
        from .labelmap import read_labelmap, read_masks
        from .nifti import read_nifti_geometry
        from .rtss_export import ExportOptions
        from .structures import ReferenceGrid, validate_report

        label_set = _template(args.template)
        for path in args.masks:
            if not _is_nifti_path(path):
                raise InputError("must be a NIfTI file (.nii or .nii.gz)", file=path, field="MASK")
        first_geometry = read_nifti_geometry(args.masks[0])
        series = _pick_series(args.series, args.series_uid, first_geometry, progress)
        grid = ReferenceGrid.from_series(series)
        labelmap_mode = label_set is not None and len(args.masks) == 1 and not args.per_roi
        if labelmap_mode:
            rois = read_labelmap(args.masks[0], label_set, reference=grid.geometry)
        else:
            rois = read_masks(args.masks, reference=grid.geometry, label_set=label_set)
        for roi in rois.rois:
            if roi.label is not None and not roi.interpreted_type:
                roi.interpreted_type = roi.label.rt_interpreted_type
            if not roi.generation_algorithm:
                roi.generation_algorithm = args.algorithm
        options = ExportOptions(structure_set_label=args.label, structure_set_name=args.name or "",
                                series_description=args.description)
        step = Progress(f"writing {kind.upper()}", enabled=not args.quiet)
        if kind == "rtss":
            from .rtss_export import export_rtss

            result = export_rtss(rois.rois, grid, args.out, options=options, source_kind=rois.source_kind,
                                 source_path=rois.source_path, progress=step)
        else:
            from .seg import export_seg

            result = export_seg(rois.rois, grid, args.out, options=options, source_kind=rois.source_kind,
                                source_path=rois.source_path, progress=step)
        result.problems = rois.problems + result.problems
        result.label_set = label_set
        document = None
        if args.json is not None:  # export writes no sidecar: the report exists only for --json
            document = result.to_dict("export", {kind: args.out})
            validate_report(document)  # jsonschema: 0.05 s of imports an export without --json skips
    except InputError as exc:
        return fail(command, str(exc))
    emit_json(args.json, document)
    if args.json != "-":
        print(f"exported {len(result.rois)} ROI(s) on series {grid.series_instance_uid} -> {args.out}")
        _print_rois(result)
    return EXIT_OK


def _add_import(sub: Any, kind: str, what: str) -> None:
    p = sub.add_parser(
        "import", help=f"{what} -> NIfTI labelmap (+ one file per ROI) with a JSON sidecar",
        description=f"Read a {what}, find its image series in --series (headers only) and write the ROIs as a "
                    "NIfTI labelmap on that series' grid, with a JSON sidecar beside it (LABELMAP without .nii[.gz], "
                    "plus .json) listing every ROI: number, name, label value and template code, voxel count and "
                    "warnings. With --template, ROI names are mapped to template codes and get the template's "
                    "stable label values. Exit 0 when written (warnings included), 2 on bad input.")
    p.add_argument("input", metavar=kind.upper(), help=f"the {what} file")
    p.add_argument("--series", required=True, metavar="DIR", help="folder holding the image series (searched "
                                                                    "recursively)")
    p.add_argument("--out", required=True, metavar="LABELMAP", help="labelmap to write (.nii or .nii.gz)")
    p.add_argument("--split", metavar="DIR", help="also write one binary NIfTI per ROI, named after the ROI, into "
                                                  "this new folder")
    p.add_argument("--template", metavar="T", help="label template file (codes, values, ROI-name rules)")
    p.add_argument("--series-uid", metavar="UID", help="use this series of the folder")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(p)
    p.set_defaults(func=lambda a: _import(a, kind))


def _add_export(sub: Any, kind: str, what: str) -> None:
    p = sub.add_parser(
        "export", help=f"masks (a labelmap + template, or per-ROI mask files) -> {what}",
        description=f"Write a new {what} referencing the image series of --series from either one labelmap and a "
                    "--template (each value becomes the template label with that value) or one NIfTI mask per ROI "
                    "(file names become ROI names; with --template they are mapped to template codes). Masks must "
                    "lie on the series grid. Exit 0 when written, 2 on bad input.")
    p.add_argument("masks", nargs="+", metavar="MASK", help="labelmap (with --template) or per-ROI mask files")
    p.add_argument("--series", required=True, metavar="DIR", help="folder holding the image series to reference")
    p.add_argument("--out", required=True, metavar=kind.upper(), help=f"{what} file to write")
    p.add_argument("--template", metavar="T", help="label template file (codes, values, colours, ROI types)")
    p.add_argument("--per-roi", action="store_true", help="with --template and one file: read it as a per-ROI mask, "
                                                          "not as a labelmap")
    p.add_argument("--series-uid", metavar="UID", help="reference this series of the folder")
    p.add_argument("--label", default="MMANNO", help="Structure Set Label / Content Label (at most 16 characters)")
    p.add_argument("--name", default="", help="Structure Set Name")
    p.add_argument("--description", default="MultiModalAnnotation ROIs", help="Series Description")
    p.add_argument("--algorithm", default="MANUAL", choices=("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC"),
                   help="ROI Generation Algorithm of ROIs that do not say (default MANUAL)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(p)
    p.set_defaults(func=lambda a: _export(a, kind))


def register(subparsers: Any) -> None:
    """Add ``rtss`` and ``seg`` with their ``import``/``export`` subcommands."""
    for kind, what, about in (
            ("rtss", "DICOM RT Structure Set", "RT Structure Set <-> NIfTI masks, referencing a DICOM series"),
            ("seg", "DICOM Segmentation (SEG)", "DICOM SEG <-> NIfTI masks, referencing a DICOM series")):
        parser = subparsers.add_parser(kind, help=about, description=about + ".")
        sub = parser.add_subparsers(dest="action", metavar="ACTION")
        sub.required = True
        _add_import(sub, kind, what)
        _add_export(sub, kind, what)


__all__: List[str] = ["register", "sidecar_path"]
