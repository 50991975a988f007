"""Benchmark: loading a DICOM CT series into a numpy volume.

Compares, in one run on the same files (warm page cache), three ways from a folder path to a
``[k, j, i]`` array in modality units:

* ``mmanno``  - ``RTSSBridgeLib.dicom_series.scan_dicom`` + ``read_volume`` (header pass, then
  pixel bytes read straight into the volume);
* ``simpleitk`` - ``ImageSeriesReader.GetGDCMSeriesFileNames`` + ``ImageSeriesReader.Execute``
  + ``GetArrayViewFromImage`` (no copy);
* ``pydicom`` - a plain loop: ``dcmread`` every file, sort by position along the slice normal,
  stack ``pixel_array * slope + intercept``.

Each tool runs in its own fresh Python process per repeat; the time is measured inside the
process around the load only (imports excluded), and the peak resident memory of the process
(``ru_maxrss``) is reported together with the resident memory after imports, so that the
difference is what loading cost. Sizes: the ``ct-chest`` sample (512x512, default slice count)
and a 512x512x300 series (``mmanno sample ct-chest --slices 300``).

Usage: ``python benchmarks/bench_dicom_load.py [--repeats 5] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

CHILD = r"""
import json, os, resource, sys, time
import numpy as np
tool, root = sys.argv[1], sys.argv[2]

def rss_mb():
    with open('/proc/self/status') as fp:
        for line in fp:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')

if tool == 'mmanno':
    from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
elif tool == 'simpleitk':
    import SimpleITK as sitk
else:
    import pydicom
baseline = rss_mb()
t0 = time.perf_counter()
if tool == 'mmanno':
    scan = scan_dicom(root)
    arr = read_volume(scan.series[0]).voxels
elif tool == 'simpleitk':
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    image = reader.Execute()
    arr = sitk.GetArrayViewFromImage(image)
else:
    datasets = [pydicom.dcmread(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs]
    iop = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float))))
    arr = np.stack([ds.pixel_array.astype(np.int16) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
                    for ds in datasets])
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the checksum allocates anything
checksum = float(sum(np.asarray(s, dtype=np.float64).sum() for s in arr))
print(json.dumps({'seconds': elapsed, 'peak_rss_mb': peak, 'baseline_rss_mb': baseline,
                  'shape': list(arr.shape), 'dtype': str(arr.dtype), 'checksum': checksum}))
"""

TOOLS = ("mmanno", "simpleitk", "pydicom")


def ensure_series(name: str, slices: int | None) -> Path:
    out = DATA / name
    if not (out / "case.json").exists():
        from RTSSBridgeLib.samples import write_sample

        write_sample("ct-chest", out, seed=0, slices=slices)
    case = json.loads((out / "case.json").read_text())
    primary = case["series"][0]
    return out / primary["dir"]


def run_tool(tool: str, root: Path) -> Dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CHILD, tool, str(root)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(root: Path, repeats: int) -> Dict[str, Any]:
    for f in root.rglob("*"):  # warm the page cache once for everyone
        if f.is_file():
            f.read_bytes()
    runs: Dict[str, List[Dict[str, Any]]] = {t: [] for t in TOOLS}
    for _ in range(repeats):  # interleave tools so that machine noise hits all alike
        for tool in TOOLS:
            runs[tool].append(run_tool(tool, root))
    result: Dict[str, Any] = {}
    for tool, items in runs.items():
        result[tool] = {
            "median_s": statistics.median(r["seconds"] for r in items),
            "min_s": min(r["seconds"] for r in items),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in items),
            "load_rss_mb": max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in items),
            "shape": items[0]["shape"],
            "dtype": items[0]["dtype"],
            "checksum": items[0]["checksum"],
        }
    checks = {result[t]["checksum"] for t in TOOLS}
    result["same_values"] = len(checks) == 1
    ours = result["mmanno"]
    for tool in ("simpleitk", "pydicom"):
        result[f"speedup_vs_{tool}"] = result[tool]["median_s"] / ours["median_s"]
        result[f"memory_ratio_vs_{tool}"] = ours["peak_rss_mb"] / result[tool]["peak_rss_mb"]
    return result


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    cases = {"ct-chest (default slices)": ensure_series("ct-chest", None),
             "ct-chest 300 slices": ensure_series("ct-chest-300", 300)}
    report: Dict[str, Any] = {
        "benchmark": "dicom_load",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "repeats": args.repeats,
        "cases": {},
    }
    for label, root in cases.items():
        n_files = sum(1 for f in root.rglob("*.dcm"))
        result = bench(root, args.repeats)
        result["n_files"] = n_files
        report["cases"][label] = result
        print(f"\n{label}: {n_files} files, volume {result['mmanno']['shape']} {result['mmanno']['dtype']}, "
              f"same values in all tools: {result['same_values']}")
        print(f"  {'tool':10} {'median s':>9} {'min s':>8} {'peak RSS MB':>12} {'load RSS MB':>12}")
        for tool in TOOLS:
            r = result[tool]
            print(f"  {tool:10} {r['median_s']:9.3f} {r['min_s']:8.3f} {r['peak_rss_mb']:12.1f} "
                  f"{r['load_rss_mb']:12.1f}")
        print(f"  mmanno is {result['speedup_vs_simpleitk']:.2f}x faster than SimpleITK and "
              f"{result['speedup_vs_pydicom']:.2f}x faster than the pydicom loop; peak memory "
              f"{result['memory_ratio_vs_simpleitk']:.2f}x SimpleITK's")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dicom_load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {out / 'dicom_load.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
