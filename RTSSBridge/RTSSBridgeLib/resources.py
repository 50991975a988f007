"""Where the shared ``Resources/`` folder (JSON Schemas, templates, profiles) is (one place).

Three layouts hold it: the source tree (``<repo>/Resources``, two levels above this package),
an installed Slicer extension (``<qt-scripted-modules>/Resources``, one level above, installed
by the top-level CMakeLists.txt) and a wheel (the ``mmanno_resources`` data package, see
pyproject.toml). ``MMANNO_RESOURCES`` overrides all three.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import List, Sequence

from .errors import InputError

_MARKER = "schemas"
#: Sub-folders of the shared resources that hold built-in documents.
ADMISSION_PROFILES = ("profiles", "admission")
DEID_PROFILES = ("profiles", "deid")


def _candidates() -> List[Path]:
    here = Path(__file__).resolve().parent
    found = []
    env = os.environ.get("MMANNO_RESOURCES")
    if env:
        found.append(Path(env))
    found += [here.parent / "Resources", here.parent.parent / "Resources"]
    spec = importlib.util.find_spec("mmanno_resources")
    if spec is not None and spec.submodule_search_locations:
        found += [Path(p) for p in spec.submodule_search_locations]
    return found


@lru_cache(maxsize=1)
def resources_dir() -> Path:
    """The shared resources folder; raises :class:`InputError` listing where it looked."""
    candidates = _candidates()
    for candidate in candidates:
        if (candidate / _MARKER).is_dir():
            return candidate
    raise InputError(f"shared Resources folder not found (looked in {', '.join(map(str, candidates))}); "
                     "reinstall the extension or set MMANNO_RESOURCES", field="Resources")


def resource_path(*parts: str) -> Path:
    """A file below the resources folder; raises :class:`InputError` when it is missing."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise InputError("missing from the installed resources", file=str(path))
    return path


def builtin_names(*folder: str) -> List[str]:
    """Names (file stems) of the JSON documents shipped in a resources sub-folder, e.g.
    ``builtin_names("profiles", "deid")``; cheap enough for a command's ``--help``."""
    return sorted(p.stem for p in resources_dir().joinpath(*folder).glob("*.json"))


def builtin_or_file(name_or_path: str, folder: Sequence[str], kind: str, noun: str = "profile",
                    field: str = "--profile") -> str:
    """The file of a built-in JSON document named ``name_or_path`` in ``folder`` (e.g.
    ``("profiles", "deid")``), or ``name_or_path`` itself when it is a file. A missing file or an
    unknown name raises :class:`InputError` listing the built-in names; ``kind`` qualifies the
    ``noun`` in that message ("unknown de-identification profile 'x'")."""
    if os.path.isfile(name_or_path):
        return name_or_path
    if name_or_path.endswith(".json") or os.sep in name_or_path:
        raise InputError(f"no such {noun} file", file=name_or_path, field=field)
    path = resources_dir().joinpath(*folder, f"{name_or_path}.json")
    if not path.is_file():
        raise InputError(f"unknown {kind} {noun} {name_or_path!r}; built-in {noun}s are "
                         f"{', '.join(builtin_names(*folder))} (or give a {noun} file)", field=field)
    return str(path)


def schema_path(name: str) -> Path:
    """A JSON Schema file in ``Resources/schemas`` (``name`` with or without ``.schema.json``)."""
    file_name = name if name.endswith(".json") else f"{name}.schema.json"
    return resource_path("schemas", file_name)
