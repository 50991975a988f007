"""``mmanno`` subcommands of RTSSBridge: ``inspect`` and ``sample``."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

from .cliutil import EXIT_BAD_INPUT, EXIT_OK, Progress, add_json_option, emit_json, fail
from .errors import InputError

if TYPE_CHECKING:
    import numpy as np

# Heavy libraries (numpy, pydicom, nibabel...) are imported inside the commands so that every
# ``mmanno`` invocation, ``--help`` included, starts without them (Testing/test_cli.py checks).


def voxel_summary(voxels: np.ndarray) -> Dict[str, Any]:
    """Statistics and a checksum of a volume that another reader's array can be checked against.

    ``sha256_float64`` hashes the values as little-endian float64 in ``[k, j, i]`` order, so two
    readers that produce the same values agree whatever integer type each chose.
    """
    import numpy as np

    as64 = np.ascontiguousarray(voxels, dtype="<f8")
    return {
        "dtype": str(voxels.dtype),
        "min": float(as64.min()) if as64.size else None,
        "max": float(as64.max()) if as64.size else None,
        "mean": float(as64.mean()) if as64.size else None,
        "sha256_float64": hashlib.sha256(as64.tobytes()).hexdigest(),
    }


def inspect_path(path: str, read_voxels: bool = True, progress: Any = None) -> List[Dict[str, Any]]:
    """The ``mmanno inspect`` result: one JSON-ready object per series (or per NIfTI file).

    Raises :class:`InputError` when nothing can be loaded (the message says why).
    """
    from .dicom_series import attach_loose_problems, read_volume, scan_dicom
    from .nifti import is_nifti_path, read_nifti

    if os.path.isfile(path) and is_nifti_path(path):
        image = read_nifti(path)
        entry = image.summary()
        entry["voxels"] = voxel_summary(image.voxels) if read_voxels else None
        entry["loaded"] = True
        return [entry]
    scan = scan_dicom(path, progress=progress)
    if not scan.series:
        codes: Dict[str, int] = {}
        for p in scan.problems:
            codes[p.code.value] = codes.get(p.code.value, 0) + 1
        detail = ", ".join(f"{n} {c}" for c, n in sorted(codes.items())) or "no files"
        raise InputError(f"no loadable image series among {scan.n_files} file(s) ({detail})", file=path)
    extra = attach_loose_problems(scan)
    results = []
    for index, series in enumerate(scan.series):
        entry = series.summary()
        entry["problems"] += [p.to_dict() for p in extra.get(index, [])]
        entry["loaded"] = False
        entry["voxels"] = None
        if read_voxels and not any(p["code"] == "UNDECODABLE_TRANSFER_SYNTAX" for p in entry["problems"]):
            try:
                entry["voxels"] = voxel_summary(read_volume(series).voxels)
                entry["loaded"] = True
            except InputError as exc:
                entry["problems"].append({"code": "UNREADABLE", "severity": "error", "message": str(exc),
                                          "files": [exc.file] if exc.file else []})
        elif not read_voxels:
            entry["loaded"] = True
        results.append(entry)
    if not any(e["loaded"] for e in results):
        raise InputError(f"{len(results)} series found but none could be read: "
                         f"{results[0]['problems'][0]['message'] if results[0]['problems'] else 'unknown reason'}",
                         file=path)
    return results


def _print_inspect(results: List[Dict[str, Any]]) -> None:
    for e in results:
        shape = "x".join(str(s) for s in e["shape"])
        spacing = " x ".join(f"{s:.4g}" for s in e["spacing_mm"])
        part = f" part {e['part']}/{e['n_parts']}" if e.get("n_parts", 1) > 1 else ""
        print(f"{e['modality'] or '-':4} {shape:>15}  spacing {spacing} mm  {e['axis_codes']}  "
              f"{e['n_files']} file(s){part}  {e['series_description']}")
        for p in e["problems"]:
            files = ", ".join(os.path.basename(f) for f in p["files"][:3])
            more = f" +{len(p['files']) - 3}" if len(p["files"]) > 3 else ""
            print(f"    [{p['severity']}] {p['code']}: {p['message']}" + (f" ({files}{more})" if files else ""))


def _cmd_inspect(args: argparse.Namespace) -> int:
    try:
        results = inspect_path(args.path, read_voxels=not args.headers_only,
                               progress=Progress("reading headers", enabled=not args.quiet))
    except InputError as exc:
        return fail("inspect", str(exc))
    emit_json(args.json, results)
    if args.json != "-":
        _print_inspect(results)
    return EXIT_OK


def _cmd_sample(args: argparse.Namespace) -> int:
    from .samples import write_sample

    try:
        case = write_sample(args.kind, args.out, seed=args.seed, oblique=args.oblique,
                            drop_slice=args.drop_slice, duplicate_slice=args.duplicate_slice,
                            slices=args.slices, progress=Progress(f"writing {args.kind}", enabled=not args.quiet))
    except InputError as exc:
        return fail("sample", str(exc))
    summary = json.loads(Path(case.manifest).read_text(encoding="utf-8"))
    emit_json(args.json, summary)
    if args.json != "-":
        print(f"wrote {args.kind} sample (seed {args.seed}) to {case.root}")
        for s in summary["series"]:
            print(f"  {s['modality']:4} {s['n_files']:4} file(s)  {s['dir']}")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add this module's subcommands to the ``mmanno`` parser."""
    p = subparsers.add_parser(
        "inspect", help="list the image series of a DICOM folder or a NIfTI file with geometry and problems",
        description="Scan a DICOM folder tree (or read a NIfTI file) and report, per series: UID, modality, "
                    "shape [i, j, k], spacing (mm), origin (LPS), direction (rows, LPS), frame of reference, "
                    "file count and every problem found (missing or duplicated slices, split series, "
                    "undecodable compression, non-DICOM files ...). Exit 0 when at least one series loaded, "
                    "2 otherwise.",
    )
    p.add_argument("path", help="DICOM folder (searched recursively), DICOM file, or .nii/.nii.gz file")
    p.add_argument("--headers-only", action="store_true", help="do not read pixels (faster; no voxel summary)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(p)
    p.set_defaults(func=_cmd_inspect)

    kinds = ("ct-chest", "mr-brain-mets", "pet-ct", "us-thyroid", "xray-ra")
    s = subparsers.add_parser(
        "sample", help="write a deterministic, realistic sample case (DICOM + ground truth)",
        description="Write a synthetic but realistic case as DICOM made with pydicom, with full UIDs and "
                    "geometry, fake identifying values for de-identification to remove, and ground truth "
                    "(masks, points, scores) beside it. The same arguments always give the same bytes.",
    )
    s.add_argument("kind", choices=kinds, help="kind of case")
    s.add_argument("--out", required=True, help="new (or empty) output folder")
    s.add_argument("--seed", type=int, default=0, help="seed for identities, lesion placement and noise (default 0)")
    s.add_argument("--oblique", action="store_true", help="3-D kinds: acquire the primary series on an oblique grid")
    s.add_argument("--drop-slice", type=int, default=None, metavar="K",
                   help="3-D kinds: leave out slice K (0-based, ascending position) of the primary series")
    s.add_argument("--duplicate-slice", type=int, default=None, metavar="K",
                   help="3-D kinds: write slice K of the primary series twice (new SOP Instance UID)")
    s.add_argument("--slices", type=int, default=None, metavar="N",
                   help="3-D kinds: number of slices of the primary series")
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(s)
    s.set_defaults(func=_cmd_sample)


__all__ = ["EXIT_BAD_INPUT", "inspect_path", "register", "voxel_summary"]
