"""Benchmark: Dice + Hausdorff + HD95 + mean surface distance of two masks, against the peer tools.

Two cases, generated once into ``benchmarks/data/`` (deterministic):

* ``organ``: a 512x512x300 pair (spacing 0.7 x 0.7 x 1.0 mm, ~5 % foreground): a large wobbly
  ellipsoid and a second reader's version (shifted by ~1.5 voxels, slightly different shape);
* ``lesions``: the same grid with 300 small spheres (radius 1.5-6 mm, brain-metastasis size)
  scattered through the volume; the test moves and resizes each, misses ~8 % and adds ~8 %.

Tools, each in a fresh Python process per repeat, interleaved (machine noise hits all alike), on
the same arrays already in memory (loading excluded):

* ``mmanno`` - ``QCMetricsLib.kernels.pair_statistics`` + the registry metrics;
* ``simpleitk`` - ``LabelOverlapMeasuresImageFilter`` (Dice) + ``HausdorffDistanceImageFilter``
  (HD, average HD over all voxels) + the usual contour recipe for HD95 and MSD
  (``LabelContour`` + ``SignedMaurerDistanceMap`` sampled on the other contour);
* ``surface-distance`` (DeepMind, PyPI) - ``compute_surface_distances`` + robust Hausdorff 100/95 +
  average surface distance + Dice;
* ``seg-metrics`` (PyPI) - ``write_metrics`` with dice, hd, hd95, msd;
* ``monai`` - ``compute_dice``, ``compute_hausdorff_distance`` (percentile None and 95),
  ``compute_average_surface_distance(symmetric=True)`` on CPU tensors;
* ``metrics-reloaded`` - ``BinaryPairwiseMeasures`` (dsc, hd, hd_perc, assd). It is not on PyPI;
  give a checkout with ``--metrics-reloaded PATH`` (or ``MMANNO_METRICS_RELOADED``); without it
  the tool is reported as not run.

Reported: median seconds, peak RSS of the process and the part above the RSS once the arrays are
loaded, the values each tool returns, and ratios (peer time / mmanno time; mmanno peak / peer peak).

Usage: ``python benchmarks/bench_qc_metrics.py [--repeats 3] [--cases organ,lesions] [--tools ...]``
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
from typing import Any, Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SPACING_IJK = (0.7, 0.7, 1.0)
SHAPE_KJI = (300, 512, 512)
TOOLS = ("mmanno", "simpleitk", "surface-distance", "seg-metrics", "monai", "metrics-reloaded")
PEERS_FILE = HERE / "requirements-peers.txt"

CHILD = r"""
import json, os, resource, sys, time, warnings
warnings.filterwarnings('ignore')
import numpy as np
tool, ref_path, test_path = sys.argv[1], sys.argv[2], sys.argv[3]
sx, sy, sz = 0.7, 0.7, 1.0
axis_spacing = (sz, sy, sx)   # numpy [k, j, i]

def rss_mb():
    with open('/proc/self/status') as fp:
        for line in fp:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')

if tool == 'mmanno':
    from QCMetricsLib.kernels import pair_statistics
    from QCMetricsLib.metrics import MetricOptions, metric
elif tool == 'simpleitk':
    import SimpleITK as sitk
elif tool == 'surface-distance':
    import surface_distance as sd
elif tool == 'seg-metrics':
    import seg_metrics.seg_metrics as sg
elif tool == 'monai':
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance
elif tool == 'metrics-reloaded':
    sys.path.insert(0, os.environ['MMANNO_METRICS_RELOADED'])
    from MetricsReloaded.metrics.pairwise_measures import BinaryPairwiseMeasures
ref = np.load(ref_path)
test = np.load(test_path)
baseline = rss_mb()
t0 = time.perf_counter()
values = {}
if tool == 'mmanno':
    stats = pair_statistics(ref, test, (sx, sy, sz))
    opts = MetricOptions()
    for name in ('dice', 'hausdorff_mm', 'hausdorff95_mm', 'mean_surface_distance_mm', 'masd_mm'):
        values[name] = metric(name).compute(stats, opts).value
elif tool == 'simpleitk':
    r = sitk.GetImageFromArray(ref.astype(np.uint8)); r.SetSpacing((sx, sy, sz))
    t = sitk.GetImageFromArray(test.astype(np.uint8)); t.SetSpacing((sx, sy, sz))
    overlap = sitk.LabelOverlapMeasuresImageFilter(); overlap.Execute(r, t)
    values['dice'] = overlap.GetDiceCoefficient()
    hd = sitk.HausdorffDistanceImageFilter(); hd.Execute(r, t)
    values['hausdorff_mm'] = hd.GetHausdorffDistance()
    values['average_hausdorff_all_voxels_mm'] = hd.GetAverageHausdorffDistance()
    rc = sitk.LabelContour(r, fullyConnected=False); tc = sitk.LabelContour(t, fullyConnected=False)
    rd = sitk.Abs(sitk.SignedMaurerDistanceMap(rc, squaredDistance=False, useImageSpacing=True))
    td = sitk.Abs(sitk.SignedMaurerDistanceMap(tc, squaredDistance=False, useImageSpacing=True))
    r2t = sitk.GetArrayViewFromImage(td)[sitk.GetArrayViewFromImage(rc) > 0]
    t2r = sitk.GetArrayViewFromImage(rd)[sitk.GetArrayViewFromImage(tc) > 0]
    values['hausdorff95_mm'] = float(max(np.percentile(r2t, 95), np.percentile(t2r, 95)))
    values['mean_surface_distance_mm'] = float((r2t.sum() + t2r.sum()) / (r2t.size + t2r.size))
elif tool == 'surface-distance':
    d = sd.compute_surface_distances(ref, test, axis_spacing)
    values['dice'] = float(sd.compute_dice_coefficient(ref, test))
    values['hausdorff_mm'] = float(sd.compute_robust_hausdorff(d, 100))
    values['hausdorff95_mm'] = float(sd.compute_robust_hausdorff(d, 95))
    a, b = sd.compute_average_surface_distance(d)
    values['masd_mm'] = float((a + b) / 2)
elif tool == 'seg-metrics':
    out = sg.write_metrics(labels=[1], gdth_img=ref.astype(np.uint8), pred_img=test.astype(np.uint8),
                           spacing=(sx, sy, sz), metrics=['dice', 'hd', 'hd95', 'msd'], verbose=False)
    row = out[0] if isinstance(out, list) else out
    values = {'dice': float(np.ravel(row['dice'])[0]), 'hausdorff_mm': float(np.ravel(row['hd'])[0]),
              'hausdorff95_mm': float(np.ravel(row['hd95'])[0]),
              'mean_surface_distance_mm': float(np.ravel(row['msd'])[0])}
elif tool == 'monai':
    r = torch.from_numpy(ref)[None, None]; t = torch.from_numpy(test)[None, None]
    values['dice'] = float(compute_dice(t, r, include_background=True))
    values['hausdorff_mm'] = float(compute_hausdorff_distance(t, r, include_background=True, spacing=axis_spacing))
    values['hausdorff95_mm'] = float(compute_hausdorff_distance(t, r, include_background=True, percentile=95,
                                                                spacing=axis_spacing))
    values['mean_surface_distance_mm'] = float(compute_average_surface_distance(
        t, r, include_background=True, symmetric=True, spacing=axis_spacing))
elif tool == 'metrics-reloaded':
    m = BinaryPairwiseMeasures(test.astype(np.int8), ref.astype(np.int8), measures=['dsc', 'hd', 'hd_perc', 'assd'],
                               pixdim=axis_spacing, dict_args={'hd_perc': 95})
    hd, assd, hd95, masd = m.measured_distance()
    values = {'dice': float(m.dsc()), 'hausdorff_mm': float(hd), 'hausdorff95_mm': float(hd95),
              'mean_surface_distance_mm': float(assd), 'masd_mm': float(masd)}
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({'seconds': elapsed, 'peak_rss_mb': peak, 'baseline_rss_mb': baseline,
                  'values': {k: float(v) for k, v in values.items()}}))
"""


# --------------------------------------------------------------------------- data
def _organ_pair() -> tuple[np.ndarray, np.ndarray]:
    n_k, n_j, n_i = SHAPE_KJI
    k = np.arange(n_k, dtype=np.float32)[:, None, None]
    j = np.arange(n_j, dtype=np.float32)[None, :, None]
    i = np.arange(n_i, dtype=np.float32)[None, None, :]

    def blob(ck: float, cj: float, ci: float, rk: float, rj: float, ri: float, wobble: float) -> np.ndarray:
        radius = ((k - ck) / rk) ** 2 + ((j - cj) / rj) ** 2 + ((i - ci) / ri) ** 2
        bumps = wobble * (np.sin(j / 17.0 + 1.3) * np.cos(i / 23.0) + np.sin(k / 11.0))
        return np.asarray(radius < 1.0 + bumps)

    return blob(150, 256, 256, 78, 112, 112, 0.08), blob(151.5, 258, 254.6, 77, 111, 113.5, 0.1)


def _lesions_pair(n: int = 300, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = np.zeros(SHAPE_KJI, dtype=bool)
    test = np.zeros(SHAPE_KJI, dtype=bool)
    axis_spacing = np.array(SPACING_IJK[::-1])
    for _ in range(n):
        centre = np.array([rng.uniform(10, SHAPE_KJI[0] - 10), rng.uniform(20, SHAPE_KJI[1] - 20),
                           rng.uniform(20, SHAPE_KJI[2] - 20)])
        radius = rng.uniform(1.5, 6.0)
        r_vox = radius / axis_spacing
        lo = np.maximum(np.floor(centre - r_vox - 3).astype(int), 0)
        hi = np.minimum(np.ceil(centre + r_vox + 3).astype(int) + 1, SHAPE_KJI)
        kk, jj, ii = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        inside = ((kk - centre[0]) / r_vox[0]) ** 2 + ((jj - centre[1]) / r_vox[1]) ** 2 + \
            ((ii - centre[2]) / r_vox[2]) ** 2 < 1
        if rng.random() > 0.08:
            ref[box] |= inside
        moved = centre + rng.normal(0, 0.7, 3)
        r2 = r_vox * rng.uniform(0.8, 1.2)
        inside2 = ((kk - moved[0]) / r2[0]) ** 2 + ((jj - moved[1]) / r2[1]) ** 2 + ((ii - moved[2]) / r2[2]) ** 2 < 1
        if rng.random() > 0.08:
            test[box] |= inside2
    return ref, test


def ensure_case(name: str) -> tuple[Path, Path]:
    DATA.mkdir(parents=True, exist_ok=True)
    ref_path, test_path = DATA / f"qc-{name}-ref.npy", DATA / f"qc-{name}-test.npy"
    if not (ref_path.exists() and test_path.exists()):
        ref, test = _organ_pair() if name == "organ" else _lesions_pair()
        np.save(ref_path, ref)
        np.save(test_path, test)
    return ref_path, test_path


# --------------------------------------------------------------------------- running
def ensure_peers() -> None:
    """Install the PyPI peers listed in requirements-peers.txt when one is missing."""
    import importlib.util

    wanted = {"SimpleITK": "SimpleITK", "surface_distance": "surface-distance", "seg_metrics": "seg-metrics",
              "monai": "monai", "torch": "torch"}
    missing = [mod for mod in wanted if importlib.util.find_spec(mod) is None]
    if missing:
        print(f"installing benchmark peers ({', '.join(missing)}) from {PEERS_FILE.name}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(PEERS_FILE)], check=True)


def run_tool(tool: str, ref: Path, test: Path, env: Dict[str, str], timeout: float) -> Dict[str, Any]:
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, tool, str(ref), str(test)], capture_output=True,
                              text=True, check=False, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s", "timeout_s": timeout}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_case(name: str, tools: List[str], repeats: int, env: Dict[str, str], timeout: float) -> Dict[str, Any]:
    ref, test = ensure_case(name)
    runs: Dict[str, List[Dict[str, Any]]] = {t: [] for t in tools}
    for _ in range(repeats):
        for tool in tools:
            if runs[tool] and "error" in runs[tool][-1]:
                continue
            runs[tool].append(run_tool(tool, ref, test, env, timeout))
            print(f"  {name} {tool}: {runs[tool][-1].get('seconds', runs[tool][-1].get('error'))}", file=sys.stderr)
    result: Dict[str, Any] = {}
    for tool, items in runs.items():
        good = [r for r in items if "error" not in r]
        if not good:
            result[tool] = {"error": items[0]["error"] if items else "not run"}
            if items and "timeout_s" in items[0]:
                result[tool]["timeout_s"] = items[0]["timeout_s"]
            continue
        result[tool] = {
            "median_s": statistics.median(r["seconds"] for r in good),
            "min_s": min(r["seconds"] for r in good),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in good),
            "compute_rss_mb": max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in good),
            "values": good[0]["values"],
            "runs": len(good),
        }
    ours = result.get("mmanno", {})
    peers = [t for t in tools if t != "mmanno" and "median_s" in result.get(t, {})]
    if "median_s" in ours:
        for tool in peers:
            result[tool]["time_ratio"] = result[tool]["median_s"] / ours["median_s"]
            result[tool]["peak_memory_ratio"] = ours["peak_rss_mb"] / result[tool]["peak_rss_mb"]
            result[tool]["compute_memory_ratio"] = ours["compute_rss_mb"] / max(result[tool]["compute_rss_mb"], 1e-9)
        for tool in tools:
            if "timeout_s" in result.get(tool, {}):
                result[tool]["time_ratio_at_least"] = result[tool]["timeout_s"] / ours["median_s"]
        if peers:
            fastest = min(peers, key=lambda t: result[t]["median_s"])
            result["fastest_peer"] = fastest
            result["speedup_vs_fastest_peer"] = result[fastest]["time_ratio"]
    reference = np.load(ref, mmap_mode="r")
    result["case"] = {"shape_kji": list(reference.shape), "spacing_ijk_mm": list(SPACING_IJK),
                      "foreground_fraction_ref": float(np.count_nonzero(reference) / reference.size)}
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default="organ,lesions")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--metrics-reloaded", default=os.environ.get("MMANNO_METRICS_RELOADED", ""),
                        help="folder holding the MetricsReloaded package (it is not on PyPI)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds after which a tool run is stopped")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    ensure_peers()
    tools = [t for t in args.tools.split(",") if t]
    env = dict(os.environ)
    if "metrics-reloaded" in tools:
        if args.metrics_reloaded and (Path(args.metrics_reloaded) / "MetricsReloaded").is_dir():
            env["MMANNO_METRICS_RELOADED"] = str(Path(args.metrics_reloaded).resolve())
        else:
            print("metrics-reloaded: no checkout given (--metrics-reloaded PATH); not run", file=sys.stderr)
            tools.remove("metrics-reloaded")
    report: Dict[str, Any] = {
        "benchmark": "qc_metrics", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "repeats": args.repeats, "cases": {},
    }
    for name in [c for c in args.cases.split(",") if c]:
        print(f"case {name}", file=sys.stderr)
        report["cases"][name] = bench_case(name, tools, args.repeats, env, args.timeout)
        res = report["cases"][name]
        print(f"\n{name}: {res['case']}")
        print(f"{'tool':18} {'median s':>9} {'x mmanno':>9} {'peak MB':>8} {'compute MB':>10}  values")
        for tool in tools:
            r = res.get(tool, {})
            if "median_s" not in r:
                print(f"{tool:18} {r.get('error', 'not run')}")
                continue
            vals = ", ".join(f"{k}={v:.4f}" for k, v in r["values"].items())
            print(f"{tool:18} {r['median_s']:9.3f} {r.get('time_ratio', 1.0):9.1f} {r['peak_rss_mb']:8.0f} "
                  f"{r['compute_rss_mb']:10.0f}  {vals}")
        if "fastest_peer" in res:
            print(f"mmanno is {res['speedup_vs_fastest_peer']:.1f}x faster than the fastest peer "
                  f"({res['fastest_peer']})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_qc_metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
