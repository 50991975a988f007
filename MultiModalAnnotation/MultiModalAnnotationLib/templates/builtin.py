"""Built-in label templates (``Resources/templates/*.json``) and the one loader for ``--template``.

A template argument is either a file path or the id of a built-in template (``lung-ct``,
``brain-mets-mr``, ``thyroid-us-tirads``, ``ra-hand-foot-mtss``, ``liver-ct-couinaud``). Built-ins
are validated like any file when they are read.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import List

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.labels import LabelSet
from RTSSBridgeLib.resources import resources_dir

from .model import LabelTemplate
from .validation import read_template_file

TEMPLATE_FOLDER = "templates"


def builtin_template_ids() -> List[str]:
    """Ids of the built-in templates, sorted."""
    folder = resources_dir() / TEMPLATE_FOLDER
    return sorted(p.name[: -len(".json")] for p in folder.glob("*.json"))


def builtin_template_path(template_id: str) -> Path:
    path = resources_dir() / TEMPLATE_FOLDER / f"{template_id}.json"
    if not path.is_file():
        raise InputError(f"{template_id!r} is neither a file nor a built-in template "
                         f"({', '.join(builtin_template_ids())})", field="template")
    return path


@lru_cache(maxsize=16)
def _builtin(template_id: str) -> LabelTemplate:
    return read_template_file(str(builtin_template_path(template_id)))


def builtin_template(template_id: str) -> LabelTemplate:
    """The built-in template ``template_id`` (validated, cached)."""
    return _builtin(template_id)


def load_template(name_or_path: str) -> LabelTemplate:
    """A template from a JSON file path, or the built-in template with that id."""
    text = os.fspath(name_or_path)
    if os.path.exists(text) or os.sep in text or text.endswith(".json"):
        return read_template_file(text)
    return builtin_template(text)


def load_label_set(name_or_path: str) -> LabelSet:
    """The :class:`~RTSSBridgeLib.labels.LabelSet` of a template file or built-in id (the
    ``RTSSBridgeLib.cliutil.label_set_loader`` that ``mmanno`` installs)."""
    return load_template(name_or_path).to_label_set()
