"""Benchmark: rigid and affine registration, mmanno (SimpleITK) vs itk-elastix default parameter maps.

Data: the ``mr-brain-mets`` sample (``mmanno sample mr-brain-mets``): fixed T1W+C 256x256x135 at
0.9375x0.9375x1 mm, moving T2W 256x256x40 at 0.9375x0.9375x3.5 mm, with a known rigid head motion
(1.5-4 degrees about each axis, 1-4 mm shifts) and 12 ground-truth landmark pairs (ventricles, eyes,
brain poles, lesion centres).

Tools, each in a fresh Python process per repeat, interleaved, on the same images read once by
``MultiModalAnnotationLib.fusion.images.read_image`` (reading excluded from the time):

* ``mmanno`` - ``MultiModalAnnotationLib.fusion.registration.register`` with the defaults of
  ``mmanno register --mode rigid|affine`` (Mattes MI, 3 levels, 40 000 seeded samples, 2 threads);
* ``elastix`` - ``itk.ElastixRegistrationMethod`` with ``GetDefaultParameterMap('rigid'|'affine')``
  (AdvancedMattesMutualInformation, 4 levels, 256 iterations, 2048 random samples), 2 threads.

Reported per tool and mode: median registration time, landmark TRE (mean, max; mm), peak RSS,
and the ratios mmanno / elastix. TRE is computed with each tool's own transform object
(fixed -> moving points).

Sampling seeds: mmanno's ``seed`` parameter and elastix's ``RandomSeed``; the timed repeats use each
tool's default seed, ``--seeds`` adds one run per further seed (TRE per seed and the mean over all
seeds; the README records both, as single-seed TRE flatters whichever tool drew well).

Usage: ``python benchmarks/bench_registration.py [--repeats 3] [--seeds 1,2,3,4] [--modes rigid,affine]
[--out benchmarks/results]``
(installs itk-elastix from benchmarks/requirements-peers.txt when it is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

CHILD = r"""
import json, resource, sys, time
import numpy as np
from MultiModalAnnotationLib.fusion.images import read_image
tool, mode, root, seed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
fixed = read_image(root + '/dicom/MR_T1W_C')
moving = read_image(root + '/dicom/MR_T2W')
pairs = json.load(open(root + '/ground_truth/landmarks.json'))['pairs']
if tool == 'mmanno':
    from MultiModalAnnotationLib.fusion.registration import RegistrationParameters, register
    t0 = time.perf_counter()
    options = {} if seed == 'default' else {'seed': int(seed)}
    result = register(fixed, moving, RegistrationParameters(mode=mode, **options))
    elapsed = time.perf_counter() - t0
    mapped = [result.transform.TransformPoint([float(v) for v in p['fixed_lps_mm']]) for p in pairs]
else:
    import itk
    def to_itk(img):
        im = itk.GetImageFromArray(np.ascontiguousarray(img.voxels, dtype=np.float32))
        im.SetSpacing([float(v) for v in img.geometry.spacing_mm])
        im.SetOrigin([float(v) for v in img.geometry.origin_lps])
        im.SetDirection(itk.GetMatrixFromArray(np.ascontiguousarray(img.geometry.direction_matrix)))
        return im
    f, m = to_itk(fixed), to_itk(moving)
    params = itk.ParameterObject.New()
    pmap = params.GetDefaultParameterMap(mode)
    if seed != 'default':
        pmap['RandomSeed'] = [seed]
    params.AddParameterMap(pmap)
    t0 = time.perf_counter()
    method = itk.ElastixRegistrationMethod.New(f, m)
    method.SetParameterObject(params)
    method.SetLogToConsole(False)
    method.SetNumberOfThreads(2)
    method.UpdateLargestPossibleRegion()
    elapsed = time.perf_counter() - t0
    transform = method.GetCombinationTransform()
    mapped = [transform.TransformPoint([float(v) for v in p['fixed_lps_mm']]) for p in pairs]
errors = [float(np.linalg.norm(np.asarray(q, dtype=float) - np.asarray(p['moving_lps_mm'])))
          for q, p in zip(mapped, pairs)]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({'tool': tool, 'mode': mode, 'seed': seed, 'seconds': elapsed, 'tre_mean_mm': float(np.mean(errors)),
                  'tre_max_mm': float(np.max(errors)), 'peak_rss_mb': peak}))
"""


def ensure_peers() -> None:
    try:
        import itk

        if not hasattr(itk, "ElastixRegistrationMethod"):
            raise ImportError("itk without elastix")
    except ImportError:
        line = next(x.split("#")[0].strip() for x in (HERE / "requirements-peers.txt").read_text().splitlines()
                    if x.strip().startswith("itk-elastix"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", line], check=True)


def ensure_data() -> Path:
    root = DATA / "mr-brain-mets"
    if not (root / "case.json").is_file():
        from RTSSBridgeLib.samples import write_sample

        write_sample("mr-brain-mets", root)
    return root


def run_child(tool: str, mode: str, root: Path, seed: str = "default") -> Dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", CHILD, tool, mode, str(root), seed], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per tool and mode at the default seeds")
    parser.add_argument("--seeds", default="1,2,3,4",
                        help="further sampling seeds (comma-separated; '' for none): one run per tool, mode and "
                             "seed, TRE reported per seed and as the mean over the default seed and these")
    parser.add_argument("--modes", default="rigid,affine", help="comma-separated: rigid, affine")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    ensure_peers()
    root = ensure_data()
    runs: List[Dict[str, Any]] = []
    loads = [load_average()]
    plan = [(repeat, "default") for repeat in range(args.repeats)]
    plan += [(args.repeats + i, s) for i, s in enumerate(seeds)]
    for order, seed in plan:
        for mode in modes:
            for tool in (("mmanno", "elastix") if order % 2 == 0 else ("elastix", "mmanno")):
                r = run_child(tool, mode, root, seed)
                runs.append(r)
                print(f"{mode:6s} {tool:8s} seed {seed:8s} {r['seconds']:7.2f} s  TRE {r['tre_mean_mm']:.3f} / "
                      f"{r['tre_max_mm']:.3f} mm  peak {r['peak_rss_mb']:.0f} MB", file=sys.stderr)
        loads.append(load_average())
    summary: Dict[str, Any] = {}
    for mode in modes:
        rows: Dict[str, Any] = {}
        for tool in ("mmanno", "elastix"):
            rs = [r for r in runs if r["tool"] == tool and r["mode"] == mode]
            timed = [r for r in rs if r["seed"] == "default"]
            per_seed = {"default": statistics.median(r["tre_mean_mm"] for r in timed)}
            per_seed.update({r["seed"]: r["tre_mean_mm"] for r in rs if r["seed"] != "default"})
            rows[tool] = {"median_s": statistics.median(r["seconds"] for r in timed),
                          "median_s_all_runs": statistics.median(r["seconds"] for r in rs),
                          "tre_mean_mm": per_seed["default"],
                          "tre_max_mm": statistics.median(r["tre_max_mm"] for r in timed),
                          "tre_per_seed_mm": per_seed,
                          "tre_seed_mean_mm": statistics.mean(per_seed.values()),
                          "tre_max_over_seeds_mm": max(r["tre_max_mm"] for r in rs),
                          "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
        m, e = rows["mmanno"], rows["elastix"]
        rows["ratio_mmanno_over_elastix"] = {
            "time": m["median_s"] / e["median_s"], "time_all_runs": m["median_s_all_runs"] / e["median_s_all_runs"],
            "tre_mean": m["tre_mean_mm"] / e["tre_mean_mm"],
            "tre_seed_mean": m["tre_seed_mean_mm"] / e["tre_seed_mean_mm"],
            "peak_rss": m["peak_rss_mb"] / e["peak_rss_mb"]}
        summary[mode] = rows
    result = {"benchmark": "registration", "python": platform.python_version(), "cpus": os.cpu_count(),
              "repeats": args.repeats, "seeds": ["default", *seeds], "load_average_1_5_15_min": loads,
              "data": "mr-brain-mets T2W (256x256x40, 3.5 mm) -> T1W+C (256x256x135, 1 mm)",
              "summary": summary, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "registration.json").write_text(json.dumps(result, indent=2))
    print("| mode | tool | median s | TRE mean mm (default seed) | TRE max mm | TRE per seed mm | seed mean mm "
          "| peak MB |")
    for mode, rows in summary.items():
        for tool in ("mmanno", "elastix"):
            r = rows[tool]
            per = " ".join(f"{v:.2f}" for v in r["tre_per_seed_mm"].values())
            print(f"| {mode} | {tool} | {r['median_s']:.2f} | {r['tre_mean_mm']:.3f} | {r['tre_max_mm']:.3f} | {per} | "
                  f"{r['tre_seed_mean_mm']:.3f} | {r['peak_rss_mb']:.0f} |")
        q = rows["ratio_mmanno_over_elastix"]
        print(f"{mode}: time ratio {q['time']:.2f} (all runs {q['time_all_runs']:.2f}), TRE ratio {q['tre_mean']:.2f} "
              f"(seed-averaged {q['tre_seed_mean']:.2f}), peak RSS ratio {q['peak_rss']:.2f}")
    print("load average (1/5/15 min) before and after each round: " + " | ".join(loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
