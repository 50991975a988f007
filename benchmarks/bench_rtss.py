"""Benchmark: RT Structure Set import and export against plastimatch and rt-utils.

Case: the ``ct-chest`` sample at 512 x 512 x 177 (0.70 x 0.70 x 1.25 mm) with 12+ ROIs drawn from
its phantom: BODY (the external contour, most of the volume), both lungs (with holes where the
nodules are), heart, aorta, trachea, mediastinum, spinal canal, bones (vertebrae and the ribs:
many contours per slice), the table, and each nodule.

Tasks, each tool in its own fresh process, interleaved, on a warm page cache:

* import - RTSS + CT folder -> all ROIs as voxel masks written to one file:
  ``mmanno rtss import RTSS --series CT --out labels.nii`` (labelmap + JSON sidecar);
  ``plastimatch convert --input RTSS --referenced-ct CT --output-ss-img ss.nii --xor-contours``
  (its bit-packed structure image); rt-utils ``RTStructBuilder.create_from`` +
  ``get_roi_mask_by_name`` for every ROI (masks in memory; it has no file output). The RTSS read
  is the one mmanno exports from the masks; a second run reads plastimatch's own export.
* export - masks -> RTSS: ``mmanno rtss export MASK.nii... --series CT --out rtss.dcm`` (one
  uncompressed NIfTI per ROI); ``plastimatch convert --input-ss-img ss.nii --input-ss-list ss.txt
  --referenced-ct CT --output-dicom DIR``; rt-utils ``RTStructBuilder.create_new`` + ``add_roi``
  + ``save`` (masks read from the same NIfTI files).

Measured: wall time of the whole process (what a user waits for), the operation time inside the
Python processes (imports excluded; plastimatch cannot be split), and the peak resident memory of
the whole process (``wait4``), as medians over the repeats and as ratios to mmanno. Exactness is
checked outside the timed runs: every import's masks and every export re-imported by mmanno are
compared with the original masks (Dice per ROI). Extra untimed mmanno export runs time its stages
inside the process (header scan, mask reading, tracing, DS formatting, writing). The timed
processes use Python's bytecode caches, as an installed package does (the project is compiled
first; ``PYTHONDONTWRITEBYTECODE`` is dropped for them).

Usage: ``python benchmarks/bench_rtss.py [--slices 177] [--repeats 3] [--out benchmarks/results]``
(the peers: ``pip install -r benchmarks/requirements-peers.txt``; Debian ``plastimatch`` and ``time``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

#: ROI name -> phantom tissues (ct_chest.anatomy) it is made of; nodules are added per case.
ROIS: Dict[str, Tuple[str, ...]] = {
    "BODY": ("fat", "muscle", "bone_cortical", "bone_cancellous", "mediastinum", "lung_right", "lung_left", "heart",
             "blood", "airway", "csf"),
    "Lung_L": ("lung_left",),
    "Lung_R": ("lung_right",),
    "Heart": ("heart",),
    "Aorta": ("blood",),
    "Trachea": ("airway",),
    "Mediastinum": ("mediastinum",),
    "SpinalCanal": ("csf",),
    "Bones": ("bone_cortical", "bone_cancellous"),
    "Table": ("table_shell", "table_foam"),
}

CHILD = r"""
import json, os, resource, sys, time
tool, task = sys.argv[1], sys.argv[2]
args = json.loads(sys.argv[3])

def rss_mb():
    with open('/proc/self/status') as fp:
        for line in fp:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')

if tool == 'mmanno':
    os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')  # what the mmanno script (cli.run) sets
    from MultiModalAnnotationLib.cli import main
    stages = {}
    if args.get('breakdown'):  # an untimed extra run: where the export's time goes
        import functools, importlib

        def timed(module, name, label):
            mod = importlib.import_module(module)
            inner = getattr(mod, name)

            @functools.wraps(inner)
            def wrapper(*a, **k):
                start = time.perf_counter()
                try:
                    return inner(*a, **k)
                finally:
                    stages[label] = stages.get(label, 0.0) + time.perf_counter() - start
            setattr(mod, name, wrapper)

        timed('RTSSBridgeLib.dicom_series', 'scan_dicom', 'CT header scan')
        timed('RTSSBridgeLib.labelmap', 'read_masks', 'mask files read')
        timed('RTSSBridgeLib.rtss_export', 'export_rtss', 'RTSS built and written')
        timed('RTSSBridgeLib.rtss_export', 'trace', 'contour tracing')
        timed('RTSSBridgeLib.rtss_export', 'ds_fields', 'DS formatting')
else:
    import numpy as np, nibabel as nib
    from rt_utils import RTStructBuilder
baseline = rss_mb()
t0 = time.perf_counter()
if tool == 'mmanno' and task == 'import':
    code = main(['rtss', 'import', args['rtss'], '--series', args['ct'], '--out', args['out'], '--quiet'])
    assert code == 0
elif tool == 'mmanno':
    code = main(['rtss', 'export', *args['masks'], '--series', args['ct'], '--out', args['out'], '--quiet'])
    assert code == 0
elif task == 'import':
    rt = RTStructBuilder.create_from(dicom_series_path=args['ct'], rt_struct_path=args['rtss'])
    masks = {name: rt.get_roi_mask_by_name(name) for name in rt.get_roi_names()}
    np.savez_compressed(args['out'], **{k: np.packbits(v) for k, v in masks.items()})
else:
    rt = RTStructBuilder.create_new(dicom_series_path=args['ct'])
    for path in args['masks']:
        name = os.path.basename(path)[:-4]
        mask = np.asarray(nib.load(path).dataobj).astype(bool)  # [i, j, k] -> rt-utils wants [rows, cols, k]
        rt.add_roi(mask=np.ascontiguousarray(mask.transpose(1, 0, 2)), name=name)
    rt.save(args['out'])
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({'seconds': elapsed, 'peak_rss_mb': peak, 'baseline_rss_mb': baseline,
                  'stages': stages if tool == 'mmanno' else {}}))
if tool == 'mmanno':  # the mmanno script (cli.run) leaves without the interpreter's teardown
    sys.stdout.flush()
    os._exit(0)
"""


def log(message: str) -> None:
    print(message, flush=True)


def prepare(slices: int) -> Dict[str, Any]:
    """The CT, the per-ROI masks (uncompressed NIfTI) and the RTSS files every tool reads."""
    from RTSSBridgeLib.dicom_series import scan_dicom
    from RTSSBridgeLib.labelmap import read_masks
    from RTSSBridgeLib.nifti import write_nifti
    from RTSSBridgeLib.rtss_export import export_rtss
    from RTSSBridgeLib.samples import plan_sample, write_sample
    from RTSSBridgeLib.structures import ReferenceGrid

    root = DATA / f"rtss-ct-{slices}"
    ct_dir = root / "ct"
    if not (root / "ready").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        log(f"writing the ct-chest sample with {slices} slices ...")
        case = write_sample("ct-chest", root / "case", seed=0, slices=slices)
        shutil.copytree(case.series_by_key("CT").dir, ct_dir)  # the CT alone (rt-utils reads every file)
        plan = plan_sample("ct-chest", seed=0, slices=slices)
        volume = plan.volume("CT")
        phantom = plan.data["phantom"]
        names = dict(ROIS)
        for n in range(1, len(plan.data["nodules"]) + 1):
            names[f"Nodule_{n}"] = (f"nodule_{n}",)
        tissue_rois = {name: [phantom.tissues.index(t) for t in tissues if t in phantom.tissues]
                       for name, tissues in names.items()}
        masks = {name: np.zeros(volume.geometry.array_shape, dtype=np.uint8) for name in names}
        log("drawing the ROIs from the phantom ...")
        for k in range(volume.geometry.shape[2]):
            tissue = volume.sampler.tissue_slice(k)
            for name, indices in tissue_rois.items():
                masks[name][k] = np.isin(tissue, indices)
        # the BODY is the external contour: fill the nodules in, they are inside it
        nodules = np.zeros(volume.geometry.array_shape, dtype=bool)
        for name in names:
            if name.startswith("Nodule_"):
                nodules |= masks[name] != 0
        masks["BODY"][nodules] = 1
        (root / "masks").mkdir()
        for name, mask in masks.items():
            write_nifti(root / "masks" / f"{name}.nii", mask, volume.geometry, label_map=True)
        series = scan_dicom(ct_dir).series[0]
        rois = read_masks([str(root / "masks" / f"{name}.nii") for name in masks], reference=series.geometry)
        export_rtss(rois.rois, ReferenceGrid.from_series(series), root / "rtss_mmanno.dcm")
        log("plastimatch: structure image and its own RTSS export (inputs of the other runs) ...")
        run_plastimatch(["convert", "--input", str(root / "rtss_mmanno.dcm"), "--referenced-ct", str(ct_dir),
                         "--output-ss-img", str(root / "ss.nii"), "--output-ss-list", str(root / "ss.txt"),
                         "--xor-contours"])
        run_plastimatch(["convert", "--input-ss-img", str(root / "ss.nii"), "--input-ss-list", str(root / "ss.txt"),
                         "--referenced-ct", str(ct_dir), "--output-dicom", str(root / "plastimatch_export")])
        exported = next(p for p in (root / "plastimatch_export").rglob("*.dcm")
                        if "RTSTRUCT" in str(read_modality(p)))
        shutil.copy(exported, root / "rtss_plastimatch.dcm")
        (root / "ready").write_text("ok\n")
    masks = sorted(str(p) for p in (root / "masks").glob("*.nii"))
    return {"root": root, "ct": str(ct_dir), "masks": masks, "rtss_mmanno": str(root / "rtss_mmanno.dcm"),
            "rtss_plastimatch": str(root / "rtss_plastimatch.dcm"), "ss_img": str(root / "ss.nii"),
            "ss_list": str(root / "ss.txt")}


def read_modality(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", ""))


def run_plastimatch(args: List[str]) -> None:
    result = subprocess.run(["plastimatch", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"plastimatch {' '.join(args[:1])} failed: {result.stderr.strip()[-400:]}")


def measure(command: List[str]) -> Dict[str, Any]:
    """Run ``command`` under GNU time: wall time and peak RSS of the process, plus what it printed.

    The peak comes from ``/usr/bin/time`` (Debian package ``time``), not from ``wait4`` here: a child
    forked from this large process would report this process's resident size as its own peak.
    """
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB=%M", *command], capture_output=True, text=True,
                            check=False, env=child_env())
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    rss = [line for line in result.stderr.splitlines() if line.startswith("MAXRSS_KB=")]
    measured: Dict[str, Any] = {"wall_s": wall, "process_peak_rss_mb": int(rss[-1].split("=")[1]) / 1024}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if lines:
        inside = json.loads(lines[-1])
        measured["operation_s"] = inside["seconds"]
        measured["baseline_rss_mb"] = inside["baseline_rss_mb"]
        measured["stages"] = inside.get("stages", {})
    return measured


def child_env() -> Dict[str, str]:
    """The environment of the timed processes: as a user's, with Python's bytecode caches used.

    An installed package has its ``.pyc`` files (pip and Slicer compile on install); a development
    shell with ``PYTHONDONTWRITEBYTECODE`` would make every mmanno run compile the project's
    sources again (0.1-0.2 s here), which no user pays. :func:`compile_project` writes them once.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_project() -> None:
    """Bytecode caches of the project's packages, as an installation has them."""
    import compileall

    root = HERE.parent
    for folder in ("RTSSBridge", "QCMetrics", "MultiModalAnnotation"):
        if (root / folder).is_dir():
            compileall.compile_dir(str(root / folder), quiet=1)


def commands(task: str, tool: str, data: Dict[str, Any], rtss_key: str, work: Path,
             breakdown: bool = False) -> List[str]:
    if tool == "plastimatch":
        if task == "import":
            return ["plastimatch", "convert", "--input", data[rtss_key], "--referenced-ct", data["ct"],
                    "--output-ss-img", str(work / "ss.nii"), "--output-ss-list", str(work / "ss.txt"),
                    "--xor-contours"]
        return ["plastimatch", "convert", "--input-ss-img", data["ss_img"], "--input-ss-list", data["ss_list"],
                "--referenced-ct", data["ct"], "--output-dicom", str(work / "out")]
    out = {("mmanno", "import"): work / "labels.nii", ("mmanno", "export"): work / "rtss.dcm",
           ("rt-utils", "import"): work / "masks.npz", ("rt-utils", "export"): work / "rtss.dcm"}[(tool, task)]
    args = {"rtss": data.get(rtss_key, ""), "ct": data["ct"], "masks": data["masks"], "out": str(out),
            "breakdown": breakdown}
    return [sys.executable, "-c", CHILD, tool, task, json.dumps(args)]


def breakdown(data: Dict[str, Any], repeats: int) -> Dict[str, float]:
    """Where mmanno's export time goes (medians of untimed extra runs with the stages timed)."""
    runs = []
    for _ in range(repeats):
        work = Path(tempfile.mkdtemp(prefix="bench-rtss-stages-"))
        try:
            runs.append(measure(commands("export", "mmanno", data, "", work, breakdown=True)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    out = {"process wall": statistics.median(r["wall_s"] for r in runs),
           "operation (after the first imports)": statistics.median(r["operation_s"] for r in runs)}
    for label in runs[0]["stages"]:
        out[label] = statistics.median(r["stages"][label] for r in runs)
    return out


def warm(data: Dict[str, Any]) -> None:
    for path in Path(data["root"]).rglob("*"):
        if path.is_file():
            path.read_bytes()


def bench(task: str, tools: Tuple[str, ...], data: Dict[str, Any], rtss_key: str, repeats: int) -> Dict[str, Any]:
    runs: Dict[str, List[Dict[str, Any]]] = {t: [] for t in tools}
    for repeat in range(repeats):  # interleaved, so machine noise hits every tool alike
        for tool in tools:
            work = Path(tempfile.mkdtemp(prefix=f"bench-rtss-{tool}-"))
            try:
                runs[tool].append(measure(commands(task, tool, data, rtss_key, work)))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        done = ", ".join(f"{t} {runs[t][-1]['wall_s']:.2f} s {runs[t][-1]['process_peak_rss_mb']:.0f} MB"
                         for t in tools)
        log(f"  {task} ({rtss_key if task == 'import' else 'masks'}) repeat {repeat + 1}/{repeats}: {done}")
    result: Dict[str, Any] = {}
    for tool, items in runs.items():
        entry = {"median_wall_s": statistics.median(r["wall_s"] for r in items),
                 "min_wall_s": min(r["wall_s"] for r in items),
                 "peak_rss_mb": max(r["process_peak_rss_mb"] for r in items)}
        if "operation_s" in items[0]:
            entry["median_operation_s"] = statistics.median(r["operation_s"] for r in items)
            entry["baseline_rss_mb"] = max(r["baseline_rss_mb"] for r in items)
        result[tool] = entry
    ours = result["mmanno"]
    for tool in tools:
        if tool == "mmanno":
            continue
        result[f"speedup_vs_{tool}"] = {
            "wall": result[tool]["median_wall_s"] / ours["median_wall_s"],
            "mmanno_operation_vs_peer_wall": result[tool]["median_wall_s"] / ours["median_operation_s"],
        }
        result[f"memory_ratio_vs_{tool}"] = ours["peak_rss_mb"] / result[tool]["peak_rss_mb"]
    return result


def exactness(data: Dict[str, Any]) -> Dict[str, Any]:
    """Dice per ROI, against the original masks, of each tool's import and of each tool's export
    imported by mmanno (computed outside the timed runs)."""
    import nibabel as nib

    from RTSSBridgeLib.labelmap import read_masks
    from RTSSBridgeLib.roi import RoiMask, dice
    from RTSSBridgeLib.rtss_import import import_rtss

    originals = {r.name: r.mask for r in read_masks(data["masks"]).rois}
    out: Dict[str, Any] = {}

    def scores(rois: Dict[str, Any]) -> Dict[str, float]:
        return {name: round(dice(originals[name], rois[name]), 6) if name in rois else 0.0 for name in originals}

    ours = import_rtss(data["rtss_mmanno"], data["ct"])
    out["import mmanno"] = scores({r.name: r.mask for r in ours.rois})
    work = Path(tempfile.mkdtemp(prefix="bench-rtss-check-"))
    try:
        run_plastimatch(["convert", "--input", data["rtss_mmanno"], "--referenced-ct", data["ct"], "--output-prefix",
                         str(work / "pl"), "--prefix-format", "nii", "--xor-contours"])
        out["import plastimatch"] = scores({p.name[:-4]: RoiMask.from_full(np.asarray(nib.load(str(p)).dataobj).T)
                                            for p in (work / "pl").glob("*.nii")})
        subprocess.run(commands("import", "rt-utils", data, "rtss_mmanno", work), check=True, capture_output=True)
        packed = np.load(work / "masks.npz")
        shape = ours.geometry.array_shape
        rt_masks = {}
        for name in packed.files:  # rt-utils: [rows, cols, k] in its own slice order (ascending position)
            bits = np.unpackbits(packed[name])[: shape[0] * shape[1] * shape[2]].astype(bool)
            rt_masks[name] = RoiMask.from_full(bits.reshape(shape[1], shape[2], shape[0]).transpose(2, 0, 1))
        out["import rt-utils"] = scores(rt_masks)
        out["export plastimatch, imported by mmanno"] = scores(
            {r.name: r.mask for r in import_rtss(data["rtss_plastimatch"], data["ct"]).rois})
        subprocess.run(commands("export", "rt-utils", data, "", work), check=True, capture_output=True)
        out["export rt-utils, imported by mmanno"] = scores(
            {r.name: r.mask for r in import_rtss(work / "rtss.dcm", data["ct"]).rois})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=177)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    if shutil.which("plastimatch") is None or not os.path.exists("/usr/bin/time"):
        raise SystemExit("plastimatch and /usr/bin/time are needed (Debian packages plastimatch and time; "
                         "Testing/install_tools.sh)")
    data = prepare(args.slices)
    compile_project()
    warm(data)
    from RTSSBridgeLib.rtss_import import read_structure_set

    rtss = read_structure_set(data["rtss_mmanno"])
    n_points = sum(len(c.points) for r in rtss.rois for c in r.contours)
    n_contours = sum(len(r.contours) for r in rtss.rois)
    case = {"shape": [512, 512, args.slices], "rois": [r.name for r in rtss.rois], "n_rois": len(rtss.rois),
            "contours": n_contours, "points": n_points,
            "rtss_mb": round(os.path.getsize(data["rtss_mmanno"]) / 1e6, 2)}
    log(f"case: 512x512x{args.slices}, {case['n_rois']} ROIs, {n_contours} contours, {n_points} points")
    tools = ("mmanno", "plastimatch", "rt-utils")
    report: Dict[str, Any] = {
        "benchmark": "rtss", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "repeats": args.repeats, "case": case, "results": {},
    }
    report["results"]["import (RTSS exported by mmanno)"] = bench("import", tools, data, "rtss_mmanno", args.repeats)
    report["results"]["import (RTSS exported by plastimatch)"] = bench("import", tools, data, "rtss_plastimatch",
                                                                        args.repeats)
    report["results"]["export"] = bench("export", tools, data, "", args.repeats)
    report["export_breakdown_s"] = breakdown(data, args.repeats)
    log("checking exactness (untimed) ...")
    report["exactness_dice"] = exactness(data)
    for label, result in report["results"].items():
        print(f"\n{label}")
        print(f"  {'tool':12} {'wall s':>8} {'op s':>7} {'peak RSS MB':>12}")
        for tool in tools:
            r = result[tool]
            op = f"{r['median_operation_s']:7.2f}" if "median_operation_s" in r else "      -"
            print(f"  {tool:12} {r['median_wall_s']:8.2f} {op} {r['peak_rss_mb']:12.0f}")
        for tool in tools[1:]:
            s = result[f"speedup_vs_{tool}"]
            print(f"  mmanno vs {tool}: {s['wall']:.1f}x faster (process), {s['mmanno_operation_vs_peer_wall']:.1f}x "
                  f"(operation), peak memory {result[f'memory_ratio_vs_{tool}']:.2f}x")
    print("\nmmanno export, where the time goes (s, medians of untimed runs):")
    for label, seconds in report["export_breakdown_s"].items():
        print(f"  {label:40} {seconds:6.3f}")
    print("\nexactness (min Dice over ROIs):")
    for label, scores in report["exactness_dice"].items():
        worst = min(scores, key=scores.get)
        print(f"  {label:42} {scores[worst]:.6f} ({worst})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rtss.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {out / 'rtss.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
