"""Agreement with plastimatch (``plastimatch convert --xor-contours``), the reference rasteriser.

R-5.7: our import of a structure set equals plastimatch's per ROI (Dice >= 0.999; in practice
1.0) on generated cases with holes, islands, several contours per plane, oblique/anisotropic/
non-square and feet-first series, and tiny ROIs, for structure sets written by our exporter and
for smooth polygons as planning systems write them; also on the real files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

from RTSSBridgeLib.dicom_series import scan_dicom
from RTSSBridgeLib.rtss_export import export_rtss
from RTSSBridgeLib.rtss_import import import_rtss
from RTSSBridgeLib.structures import ReferenceGrid, RoiSet

from .conftest import require_tool
from .rtss_cases import (
    GRIDS,
    TESTDATA,
    ContourSpec,
    RoiSpec,
    circle,
    dice_arrays,
    hard_masks,
    plastimatch_masks,
    write_rtss,
    write_series,
)

pytestmark = pytest.mark.tools
MIN_DICE = 0.999


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[Path, ReferenceGrid]]:
    root = tmp_path_factory.mktemp("plastimatch-series")
    out = {name: write_series(root / name, geometry) for name, geometry in GRIDS.items()}
    oriented = root / "oriented"
    oriented.mkdir()
    for path in sorted((TESTDATA / "rtutils_mock").glob("oriented_*.dcm")):
        shutil.copy(path, oriented / path.name)
    out["rtutils_oriented"] = (oriented, ReferenceGrid.from_series(scan_dicom(oriented).series[0]))
    return out


def agree(result: RoiSet, rtss: Path, folder: Path, work: Path) -> Dict[str, float]:
    """Dice per ROI between our masks and plastimatch's; also checks both use the series grid."""
    masks = plastimatch_masks(rtss, folder, work)
    scores = {}
    for roi in result.rois:
        assert roi.mask is not None
        if roi.mask.is_empty() and roi.name not in masks:
            scores[roi.name] = 1.0
            continue
        theirs, geometry = masks[roi.name]
        assert geometry.isclose(result.geometry, 1e-3), f"plastimatch put {roi.name} on another grid"
        scores[roi.name] = dice_arrays(roi.mask.full(), theirs)
    return scores


@pytest.mark.parametrize("name", ["axial", "oblique", "feet_first"])
def test_our_exported_structure_sets_rasterise_identically_in_plastimatch(series, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Voxel-boundary contours of border-touching masks, holes, 1- to 4-voxel ROIs and a random blob."""
    require_tool("plastimatch", "plastimatch")
    folder, grid = series[name]
    rois = hard_masks(grid.geometry.array_shape)
    export_rtss(rois, grid, tmp_path / "rtss.dcm")
    ours = import_rtss(tmp_path / "rtss.dcm", folder)
    scores = agree(ours, tmp_path / "rtss.dcm", folder, tmp_path / "plastimatch")
    assert scores and all(s >= MIN_DICE for s in scores.values()), scores
    for original, roi in zip(rois, ours.rois):
        assert original.mask is not None and roi.mask is not None and original.mask.same_as(roi.mask)


@pytest.mark.parametrize("name", ["axial", "oblique", "feet_first", "rtutils_oriented"])
def test_smooth_polygons_with_holes_and_tiny_rois_agree_with_plastimatch(series, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Planning-system style polygons at arbitrary coordinates: rings (hole + island), two
    overlapping contours on one plane (xor), and ROIs smaller than a voxel or two."""
    require_tool("plastimatch", "plastimatch")
    folder, grid = series[name]
    ni, nj, nk = grid.geometry.shape
    centre = ((ni - 1) / 2.0, (nj - 1) / 2.0)
    radius = 0.4 * min(ni, nj)
    ring, xor, tiny, two = [], [], [], []
    for k in range(nk):
        ring += [ContourSpec(circle(grid, k, centre, radius * (0.7 + 0.03 * k))),
                 ContourSpec(circle(grid, k, centre, radius * 0.45, n=31)),
                 ContourSpec(circle(grid, k, centre, radius * 0.15, n=17, phase=0.3))]
        xor += [ContourSpec(circle(grid, k, (centre[0] - 3.1, centre[1]), radius * 0.3, n=23)),
                ContourSpec(circle(grid, k, (centre[0] + 2.9, centre[1] + 0.4), radius * 0.3, n=29))]
    tiny.append(ContourSpec(circle(grid, 1, (3.0, 4.0), 0.45, n=8)))  # covers one voxel centre
    two.append(ContourSpec(circle(grid, nk - 1, (ni - 2.5, nj - 2.0), 0.7, n=10)))  # straddles two
    rois = [RoiSpec(1, "Ring", ring), RoiSpec(2, "Xor", xor), RoiSpec(3, "Tiny", tiny), RoiSpec(4, "Pair", two)]
    rtss = write_rtss(tmp_path / "rtss.dcm", grid, rois)
    ours = import_rtss(rtss, folder)
    assert ours.rois[2].voxel_count() == 1 and ours.rois[3].voxel_count() == 2
    assert all(r.voxel_count() > 0 for r in ours.rois)
    scores = agree(ours, rtss, folder, tmp_path / "plastimatch")
    assert all(s >= MIN_DICE for s in scores.values()), scores


@pytest.mark.parametrize(("rtss", "folder"), [
    ("cheese_raystation/RS1.2.752.243.1.1.20210208111802158.1580.88111.dcm", "cheese_raystation"),
    ("rtutils_mock/invalid_reference_rt.dcm", "rtutils_mock"),
    ("rtutils_mock/rt.dcm", "rtutils_mock"),
])
def test_real_files_agree_with_plastimatch(rtss: str, folder: str, tmp_path: Path) -> None:
    require_tool("plastimatch", "plastimatch")
    ours = import_rtss(TESTDATA / rtss, TESTDATA / folder)
    assert ours.reference is not None
    images = tmp_path / "images"
    images.mkdir()
    for path in ours.reference.files:  # plastimatch wants a folder holding just that series
        shutil.copy(path, images / Path(path).name)
    scores = agree(ours, TESTDATA / rtss, images, tmp_path / "plastimatch")
    assert scores == dict.fromkeys(scores, 1.0), scores
    assert np.all([r.voxel_count() > 0 for r in ours.rois])
