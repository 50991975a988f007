"""LabelSet: the template view RTSSBridge and QCMetrics use (R-8.2); codes, values, ROI-name rules."""

from __future__ import annotations

import pytest

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.labels import Code, LabelInfo, LabelSet, NameRule

SCT_LUNG = Code("SCT", "39607008", "Lung")


def brain_set() -> LabelSet:
    return LabelSet.from_labels(
        [LabelInfo("SKULL", "Skull", 2, (241, 214, 145)),
         LabelInfo("METASTASIS", "Brain metastasis", 10, (255, 0, 0), names={"zh": "脑转移瘤"})],
        template_id="brain-mets", version="1.0",
        name_rules=[NameRule("[*]skull", "SKULL", "glob"), NameRule(r"[LR]_.+", "METASTASIS", "regex")])


def test_map_name_by_code_name_locale_and_rules() -> None:
    labels = brain_set()
    assert labels.map_name("skull").code == "SKULL"  # type: ignore[union-attr]
    assert labels.map_name("*Skull").code == "SKULL"  # type: ignore[union-attr]
    assert labels.map_name("  R_lat_temp ").code == "METASTASIS"  # type: ignore[union-attr]
    assert labels.map_name("l_frontal").code == "METASTASIS"  # type: ignore[union-attr]
    assert labels.map_name("脑转移瘤").code == "METASTASIS"  # type: ignore[union-attr]
    assert labels.map_name("Brain  METASTASIS").code == "METASTASIS"  # type: ignore[union-attr]
    assert labels.map_name("External") is None
    assert labels.by_value(10).code == "METASTASIS"  # type: ignore[union-attr]
    assert labels.by_value(3) is None


def test_codes_compare_on_scheme_and_value() -> None:
    assert Code("SCT", "39607008", "Lung") == Code("SCT", "39607008", "lung structure")
    assert Code("SCT", "39607008", "Lung") != Code("DCM", "39607008", "Lung")
    assert len({SCT_LUNG, Code("SCT", "39607008", "x")}) == 1


@pytest.mark.parametrize(("make", "match"), [
    (lambda: LabelInfo("lung", "Lung", 1), "UPPER_SNAKE"),
    (lambda: LabelInfo("LUNG", "Lung", 0), "1..65535"),
    (lambda: LabelInfo("LUNG", "Lung", 1, (0, 0, 256)), "0..255"),
    (lambda: Code("SCT", "", "Lung"), "code.value: must not be empty"),
    (lambda: NameRule("x", "LUNG", "fuzzy"), "exact, glob or regex"),
    (lambda: NameRule("(", "LUNG", "regex"), "not a regular expression"),
    (lambda: LabelSet.from_labels([LabelInfo("A", "a", 1), LabelInfo("A", "b", 2)]), "duplicate code A"),
    (lambda: LabelSet.from_labels([LabelInfo("A", "a", 1), LabelInfo("B", "b", 1)]),
     "value 1 of B is already used by A"),
    (lambda: LabelSet.from_labels([LabelInfo("A", "a", 1)], name_rules=[NameRule("x", "B")]), "unknown code B"),
])
def test_invalid_labels_are_refused(make, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=match):
        make()


def test_by_code_names_the_template() -> None:
    with pytest.raises(InputError, match="'LIVER' is not a label of template brain-mets"):
        brain_set().by_code("LIVER")


def test_load_label_set_without_loader_explains(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from RTSSBridgeLib import cliutil

    saved = cliutil.label_set_loader
    cliutil.label_set_loader = None
    try:
        with pytest.raises(InputError, match="read by the MultiModalAnnotation core"):
            cliutil.load_label_set(str(tmp_path / "t.json"))
    finally:
        cliutil.label_set_loader = saved
