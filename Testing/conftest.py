"""Shared fixtures: a real MRML scene, and the Slicer module files importable outside Slicer.

* ``mrml_scene`` - a fresh ``slicer.vtkMRMLScene`` from the slicer-core wheel with the default
  color tables (what Slicer's color logic adds at start-up, needed by labelmap display nodes).
* ``slicer_shim`` - sets ``slicer.mrmlScene`` (to ``mrml_scene``) and ``slicer.modules`` for one
  test, as the application does; shipped code never does this.
* ``slicer_modules`` - additionally places the stand-ins of :mod:`Testing.slicer_gui_stubs`
  (``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``,
  ``slicer.i18n``) in ``sys.modules`` and imports the three module files fresh; everything is
  undone after the test.

Tests that need the scene are marked ``pytest.mark.slicer``. slicer-core has wheels only for
Python 3.10 and later, so on the Python 3.9 CI leg (the Python of Slicer 5.8) those tests are
skipped with that reason, while the core tests run.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The Slicer modules of the extension, a module's dependencies before it.
MODULE_NAMES = ("RTSSBridge", "QCMetrics", "MultiModalAnnotation")

try:
    import slicer as _slicer  # noqa: F401  (only to learn whether the wheel is there)

    SLICER_UNAVAILABLE = ""
except ImportError as _exc:
    SLICER_UNAVAILABLE = (
        f"slicer-core cannot be imported ({type(_exc).__name__}: {_exc}); it has wheels only for Python 3.10+, "
        f"so on Python {sys.version_info.major}.{sys.version_info.minor} (the 3.9 CI leg) the MRML-scene tests "
        "are skipped"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not SLICER_UNAVAILABLE:
        return
    skip = pytest.mark.skip(reason=SLICER_UNAVAILABLE)
    for item in items:
        if "slicer" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def mrml_scene() -> Iterator[Any]:
    """A fresh MRML scene with the default color tables."""
    if SLICER_UNAVAILABLE:
        pytest.skip(SLICER_UNAVAILABLE)
    import slicer

    scene = slicer.vtkMRMLScene()
    color_logic = slicer.vtkMRMLColorLogic()
    color_logic.SetMRMLScene(scene)
    yield scene
    color_logic.SetMRMLScene(None)
    scene.Clear(1)


@pytest.fixture
def slicer_shim(mrml_scene: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``slicer.mrmlScene`` and ``slicer.modules`` as inside the application, for one test."""
    import slicer

    monkeypatch.setattr(slicer, "mrmlScene", mrml_scene, raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(), raising=False)
    monkeypatch.setattr(slicer, "selfTests", {}, raising=False)
    return slicer


@pytest.fixture
def slicer_modules(slicer_shim: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, types.ModuleType]]:
    """The three module files imported with the GUI stand-ins in place: {module name: module}."""
    from .slicer_gui_stubs import install

    install(monkeypatch.setitem, monkeypatch.setattr)
    for name in MODULE_NAMES:
        monkeypatch.syspath_prepend(str(REPO / name))
    # A module folder (e.g. ./RTSSBridge) could have been imported as a namespace package.
    saved = {name: sys.modules.pop(name) for name in MODULE_NAMES if name in sys.modules}
    try:
        modules = {name: importlib.import_module(name) for name in MODULE_NAMES}
        for name, module in modules.items():
            if Path(str(module.__file__)).resolve() != (REPO / name / f"{name}.py").resolve():
                raise RuntimeError(f"imported {name} from {module.__file__}, not from the module file")
        yield modules
    finally:
        for name in MODULE_NAMES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@pytest.fixture(scope="session")
def sample_case(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Factory ``sample_case(kind, **options) -> SampleCase``: each distinct case is generated once
    per test session (per xdist worker) and shared; tests must not modify it (copy it first)."""
    from RTSSBridgeLib.samples import write_sample

    cache: Dict[Any, Any] = {}
    root = tmp_path_factory.mktemp("sample-cases")

    def get(kind: str, **options: Any) -> Any:
        key = (kind, tuple(sorted(options.items())))
        if key not in cache:
            name = "-".join([kind, *(f"{k}{v}" for k, v in sorted(options.items()))])
            cache[key] = write_sample(kind, root / name, **options)
        return cache[key]

    return get


def require_tool(executable: str, package: str) -> str:
    """Path of an external tool (plastimatch, dciodvfy, chromium...) installed from the Debian
    ``package`` by Testing/install_tools.sh. Missing: the test fails when MMANNO_REQUIRE_TOOLS=1
    (CI, where it was just installed) and is skipped with the reason otherwise."""
    import os
    import shutil

    path = shutil.which(executable)
    if path:
        return path
    reason = f"{executable} not found (Debian package {package}; run Testing/install_tools.sh as root)"
    if os.environ.get("MMANNO_REQUIRE_TOOLS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)
