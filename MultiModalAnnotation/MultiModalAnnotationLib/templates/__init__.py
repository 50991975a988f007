"""Label templates (R-8.2, R-8.3, R-6.6): model, validation, built-ins, exports and tables.

>>> from MultiModalAnnotationLib.templates import load_template
>>> template = load_template("brain-mets-mr")
>>> template.match_roi_name("*Skull").code, template.match_roi_name("R_lat_temp").code
('SKULL', 'METASTASIS')
>>> template.to_label_set().by_value(12).code
'METASTASIS_2'
"""

from __future__ import annotations

from .builtin import builtin_template, builtin_template_ids, load_label_set, load_template
from .model import (
    ANNOTATION_TYPES,
    CATEGORIES,
    CODE_ROLES,
    LEVELS,
    AttributeDefinition,
    EnumOption,
    Instances,
    LabelTemplate,
    NameMapping,
    TemplateLabel,
)
from .validation import TemplateError, read_template_file, template_from_dict, template_problems

__all__ = [
    "ANNOTATION_TYPES", "CATEGORIES", "CODE_ROLES", "LEVELS", "AttributeDefinition", "EnumOption", "Instances",
    "LabelTemplate", "NameMapping", "TemplateError", "TemplateLabel", "builtin_template", "builtin_template_ids",
    "load_label_set", "load_template", "read_template_file", "template_from_dict", "template_problems",
]
