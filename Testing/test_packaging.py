"""The installable core (pyproject.toml): every package ships, the shared Resources ship as the
``mmanno_resources`` data package and are found from a plain (non-editable) install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.9/3.10
    tomllib = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]
LIBS = {"RTSSBridgeLib": "RTSSBridge", "MultiModalAnnotationLib": "MultiModalAnnotation", "QCMetricsLib": "QCMetrics"}


@pytest.mark.skipif(tomllib is None, reason="tomllib is in the standard library from Python 3.11")
def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for lib, module in LIBS.items():
        base = ROOT / module / lib
        assert config["package-dir"][lib] == f"{module}/{lib}"
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join((lib, *rel.parts)) if rel.parts else lib)
    assert set(config["packages"]) == found | {"mmanno_resources"}
    assert config["package-dir"]["mmanno_resources"] == "Resources"
    assert config["package-data"]["mmanno_resources"]


def test_wheel_ships_resources_found_by_the_locator(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, check=False)
    if build.returncode != 0 and "No matching distribution" in build.stderr:
        pytest.skip("no package index to fetch the build backend from")
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("mmanno-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    schemas = sorted(p.name for p in (ROOT / "Resources" / "schemas").glob("*.json"))
    shipped = sorted(p.name for p in (target / "mmanno_resources" / "schemas").glob("*.json"))
    assert shipped == schemas
    assert (target / "mmanno_resources" / "requirements.txt").is_file()
    # a Python that sees only the installed wheel (-S: no site-packages, no editable finder)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from RTSSBridgeLib.resources import schema_path; print(schema_path('sample-case'))")
    result = subprocess.run([sys.executable, "-S", "-c", script, str(target)], capture_output=True, text=True,
                            check=False, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == (target / "mmanno_resources" / "schemas" /
                                                     "sample-case.schema.json").resolve()
