"""Label templates (R-8.2, R-8.3, R-6.6, Appendix C): model, validation, built-ins, exports, tables."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from MultiModalAnnotationLib.cli import main
from MultiModalAnnotationLib.templates import (
    TemplateError,
    builtin_template,
    builtin_template_ids,
    load_template,
    template_from_dict,
    template_problems,
)
from MultiModalAnnotationLib.templates.exports import (
    EXPORT_FORMATS,
    dcmqi_segmentation_metadata,
    nnunet_dataset,
    nnunet_value_map,
    slicer_color_table_csv,
    slicer_terminology,
    template_from_slicer_csv,
)
from MultiModalAnnotationLib.templates.tables import flat_csv, template_from_flat_csv
from RTSSBridgeLib import cliutil
from RTSSBridgeLib.errors import InputError

REPO = Path(__file__).resolve().parents[1]
BUILTINS = ("brain-mets-mr", "liver-ct-couinaud", "lung-ct", "ra-hand-foot-mtss", "thyroid-us-tirads")
MY_SCHEMAS = ("label-template", "task", "annotation", "annotation-appendix-b", "package-manifest")


def lung() -> Dict[str, Any]:
    return builtin_template("lung-ct").to_dict()


def test_every_builtin_template_validates_and_has_en_and_zh_names() -> None:
    """R-8.2: the five built-in templates of the issue exist and are valid."""
    assert tuple(builtin_template_ids()) == BUILTINS
    for template_id in BUILTINS:
        data = json.loads((REPO / "Resources" / "templates" / f"{template_id}.json").read_text("utf-8"))
        assert template_problems(data) == []
        template = load_template(template_id)
        assert template.to_dict() == data  # the file is in canonical form: read -> write is identical
        for label in template.labels:
            assert label.names["en"] and label.names["zh"]


def test_template_tree_has_the_four_granularity_levels() -> None:
    """R-8.3: system > organ > substructure > feature in the liver template."""
    liver = builtin_template("liver-ct-couinaud")
    chain, code = [], "HCC_NECROSIS"
    while code:
        label = liver.label(code)
        chain.append(label.level)
        code = label.parent or ""
    assert chain == ["feature", "feature", "organ", "system"]
    assert [c.code for c in liver.children("LIVER")][:8] == [f"LIVER_S{n}" for n in range(1, 9)]


@pytest.mark.parametrize(("kind", "template_id"), [("ct-chest", "lung-ct"), ("mr-brain-mets", "brain-mets-mr"),
                                                   ("us-thyroid", "thyroid-us-tirads")])
def test_sample_label_values_and_codes_are_the_templates(sample_case: Any, kind: str, template_id: str) -> None:
    """The ground-truth label tables of the samples (value, code) are found in the template's LabelSet."""
    options = {"ct-chest": {"slices": 12}, "mr-brain-mets": {"slices": 16}}.get(kind, {})
    case = sample_case(kind, **options)
    manifest = json.loads(Path(case.manifest).read_text("utf-8"))
    label_set = load_template(template_id).to_label_set()
    entries = [e for e in manifest["ground_truth"] if e.get("labels")]
    assert entries
    for entry in entries:
        for item in entry["labels"]:
            info = label_set.by_value(item["value"])
            assert info is not None and info.code == item["code"], item


def test_seed_002_roi_names_map_to_codes() -> None:
    """R-002: R_lat_temp, L_frontal, *Skull ... of seed 002 map to template codes."""
    brain = builtin_template("brain-mets-mr")
    for name in ("R_lat_temp", "R_lat_frontal", "L_occipole", "L_mid_cblm", "L_frontal", "R_lat_temp_2"):
        assert brain.match_roi_name(name).code == "METASTASIS", name  # type: ignore[union-attr]
    assert brain.match_roi_name("*Skull").code == "SKULL"  # type: ignore[union-attr]
    assert brain.match_roi_name("Skull").code == "SKULL"  # type: ignore[union-attr]
    assert brain.match_roi_name("External") is None
    label_set = brain.to_label_set()
    assert label_set.map_name("L_frontal").code == "METASTASIS"  # type: ignore[union-attr]
    assert label_set.by_value(11).code == "METASTASIS_1"  # type: ignore[union-attr]
    assert brain.resolve_value(13)[0].code == "METASTASIS" and brain.resolve_value(13)[1] == 3  # type: ignore[index]


def test_ra_template_has_every_scored_joint_of_the_sample_with_its_score_ranges(sample_case: Any) -> None:
    """R-004: a point + erosion 0-5 / JSN 0-4 label per Sharp/van der Heijde joint."""
    ra = builtin_template("ra-hand-foot-mtss")
    joints = json.loads((sample_case("xray-ra").root / "ground_truth" / "joints.json").read_text("utf-8"))["joints"]
    for joint in joints:
        label = ra.label(joint["code"])
        assert "point" in label.annotation_types
        keys = {a.key for a in label.attributes}
        assert keys == {"erosion" if k == "erosion" else "jsn" for k in joint["scored_for"]}
    erosion = ra.label("RH_MCP1").attribute("erosion")
    jsn = ra.label("RH_MCP1").attribute("jsn")
    assert erosion is not None and jsn is not None
    assert (erosion.minimum, erosion.maximum, jsn.minimum, jsn.maximum) == (0, 5, 0, 4)
    assert erosion.check(6) and erosion.check(2.5) and not erosion.check(5) and jsn.check(5)


def test_thyroid_template_scores_acr_tirads() -> None:
    """Appendix A: TI-RADS features with points, level 1-5."""
    thyroid = builtin_template("thyroid-us-tirads")
    nodule = thyroid.label("THYROID_NODULE")
    composition = nodule.attribute("composition")
    assert composition is not None and composition.option("solid or almost completely solid").points == 2  # type: ignore[union-attr]
    level = nodule.attribute("tirads_level")
    assert level is not None and level.check(4) is None and "out of range 1..5" in str(level.check(6))


# --------------------------------------------------------------------------- broken templates
def _mutate(change: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    data = copy.deepcopy(lung())
    change(data)
    return data


def _label(data: Dict[str, Any], code: str) -> Dict[str, Any]:
    return next(lab for lab in data["labels"] if lab["code"] == code)


BROKEN_TEMPLATES = [
    ("duplicate code", lambda d: d["labels"].append(copy.deepcopy(d["labels"][0])),
     r"labels\[8\]\.code: duplicate code LUNG_LEFT .*codes are unique"),
    ("unknown parent", lambda d: _label(d, "NODULE").update(parent="LUNGS"),
     r"labels\[7\]\.parent: unknown parent LUNGS of NODULE"),
    ("cycle", lambda d: (_label(d, "LUNG_LEFT").update(parent="LUNG_LEFT_UPPER_LOBE")),
     r"cycle .*LUNG_LEFT.*no cycle"),
    ("own parent", lambda d: _label(d, "LUNG_LEFT").update(parent="LUNG_LEFT"), r"is its own parent"),
    ("bad enum value in the label", lambda d: _label(d, "NODULE").update(category="tumour"),
     r"labels\[7\]\.category: 'tumour' is not one of"),
    ("duplicate enum option", lambda d: _label(d, "NODULE")["attributes"][0]["options"].append({"value": "benign"}),
     r"attributes\[0\]\.options\[2\]\.value: duplicate option 'benign'"),
    ("enum without options", lambda d: _label(d, "NODULE")["attributes"][0].pop("options"),
     r"enum attribute malignancy of NODULE has no options"),
    ("empty range", lambda d: _label(d, "NODULE")["attributes"][7].update(minimum=10, maximum=5),
     r"attributes\[7\]\.minimum: range 10\.\.5 of diameter_mm is empty"),
    ("out-of-range value", lambda d: _label(d, "LUNG_LEFT").update(value=70000),
     r"labels\[0\]\.value: 70000 is greater than the maximum of 65535"),
    ("out-of-range colour", lambda d: _label(d, "LUNG_LEFT").update(color=[0, 0, 300]),
     r"labels\[0\]\.color\[2\]: 300 is greater than the maximum of 255"),
    ("colliding values", lambda d: _label(d, "LUNG_RIGHT").update(value=1),
     r"labels\[1\]\.value: labels\[1\] LUNG_RIGHT value 1 collides with labels\[0\] LUNG_LEFT value 1"),
    ("value inside an instance range", lambda d: _label(d, "LUNG_RIGHT").update(value=12),
     r"NODULE instance values 11\.\.99 collides with labels\[1\] LUNG_RIGHT value 12"),
    ("mask without value", lambda d: _label(d, "LUNG_LEFT").pop("value"),
     r"LUNG_LEFT allows mask annotation but has no labelmap value"),
    ("code not UPPER_SNAKE", lambda d: _label(d, "NODULE").update(code="Nodule"),
     r"labels\[7\]\.code: 'Nodule' does not match"),
    ("missing zh name", lambda d: _label(d, "NODULE")["names"].pop("zh"), r"labels\[7\]\.names: 'zh' is a required"),
    ("child coarser than parent", lambda d: _label(d, "LUNG_LEFT_UPPER_LOBE").update(level="system"),
     r"LUNG_LEFT_UPPER_LOBE is system but its parent LUNG_LEFT is organ"),
    ("mapping to unknown code", lambda d: d["name_mapping"].append({"pattern": "x", "match": "exact", "code": "LIVER"}),
     r"name_mapping\[7\]\.code: .*unknown code LIVER"),
    ("bad regular expression", lambda d: d["name_mapping"].append({"pattern": "(", "match": "regex", "code": "NODULE"}),
     r"name_mapping\[7\]\.pattern: '\(' is not a regular expression"),
    ("exported label without type code", lambda d: _label(d, "LUNG_LEFT")["codes"].pop("type"),
     r"LUNG_LEFT has a labelmap value but no type code"),
    ("unknown annotation type", lambda d: _label(d, "LUNG_LEFT").update(annotation_types=["mesh"]),
     r"annotation_types\[0\]: 'mesh' is not one of"),
    ("range on an enum", lambda d: _label(d, "NODULE")["attributes"][0].update(minimum=0),
     r"enum attribute malignancy of NODULE has a numeric range"),
]


@pytest.mark.parametrize(("case", "change", "match"), BROKEN_TEMPLATES, ids=[c[0] for c in BROKEN_TEMPLATES])
def test_broken_templates_are_refused_naming_field_and_rule(case: str, change: Callable[[Dict[str, Any]], None],
                                                            match: str) -> None:
    """R-8.2: each broken rule is reported on one line that names the field and the rule."""
    data = _mutate(change)
    problems = template_problems(data)
    assert problems, case
    assert any(re.search(match, line) for line in problems), problems
    assert all("\n" not in line for line in problems)
    with pytest.raises(TemplateError, match=r"^broken\.json: ") as info:
        template_from_dict(data, file="broken.json")
    assert info.value.problems == problems


def test_all_problems_of_a_template_are_reported_together() -> None:
    data = _mutate(lambda d: (_label(d, "LUNG_RIGHT").update(value=1), _label(d, "NODULE").update(parent="LUNGS")))
    with pytest.raises(TemplateError) as info:
        template_from_dict(data, file="t.json")
    assert len(info.value.problems) == 2 and "and 1 more problem" in str(info.value)
    assert str(info.value).startswith("t.json: ")


# --------------------------------------------------------------------------- exports and round trips
@pytest.mark.parametrize("template_id", BUILTINS)
def test_slicer_csv_round_trip_is_exact(template_id: str) -> None:
    """Must show: template -> Slicer CSV -> template (exact, also as JSON text)."""
    template = builtin_template(template_id)
    back = template_from_slicer_csv(slicer_color_table_csv(template))
    assert back == template
    assert json.dumps(back.to_dict(), ensure_ascii=False) == json.dumps(template.to_dict(), ensure_ascii=False)


@pytest.mark.parametrize("template_id", BUILTINS)
def test_flat_csv_round_trip_is_exact(template_id: str) -> None:
    """Must show: template -> flat CSV -> template (exact, also as JSON text)."""
    template = builtin_template(template_id)
    text = flat_csv(template)
    back = template_from_flat_csv(text)
    assert back == template
    assert json.dumps(back.to_dict(), ensure_ascii=False) == json.dumps(template.to_dict(), ensure_ascii=False)


def test_edits_in_the_flat_csv_come_back_and_errors_name_the_line() -> None:
    text = flat_csv(builtin_template("lung-ct"))
    rows = list(csv.DictReader(io.StringIO(text)))
    row = next(r for r in rows if r["record"] == "label" and r["code"] == "LUNG_LEFT")
    row["name_zh"] = "左侧肺"
    row["color"] = "1;2;3"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    edited = template_from_flat_csv(out.getvalue())
    assert edited.label("LUNG_LEFT").names["zh"] == "左侧肺" and edited.label("LUNG_LEFT").color == (1, 2, 3)
    row["color"] = "red"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with pytest.raises(InputError, match=r"edited.csv: line 3\.color: 'red' must be R;G;B integers"):
        template_from_flat_csv(out.getvalue(), file="edited.csv")
    with pytest.raises(InputError, match=r"line 2\.record: 'labels' is not one of"):
        template_from_flat_csv(text.replace("\ntemplate,", "\nlabels,", 1), file="x.csv")
    bad_code = text.replace("SCT|39607008|Lung", "SCT|39607008", 1)
    with pytest.raises(InputError, match=r"must be scheme\|value\|meaning"):
        template_from_flat_csv(bad_code)


def test_a_plain_slicer_colour_table_imports() -> None:
    """A Slicer colour table without the MMAnno columns (Slicer's own test file layout)."""
    text = ("LabelValue,Name,Color_R,Color_G,Color_B,Color_A,Category_CodingScheme,Category_CodeValue,"
            "Category_CodeMeaning,Type_CodingScheme,Type_CodeValue,Type_CodeMeaning,TypeModifier_CodingScheme,"
            "TypeModifier_CodeValue,TypeModifier_CodeMeaning,Region_CodingScheme,Region_CodeValue,Region_CodeMeaning,"
            "RegionModifier_CodingScheme,RegionModifier_CodeValue,RegionModifier_CodeMeaning\n"
            "1,left_kidney,185,162,13,150,SCT,123037004,Anatomical Structure,SCT,64033007,Kidney,"
            "SCT,7771000,Left,,,,,,\n"
            "6,right_kidney_mass,20,28,140,255,SCT,49755003,Morphologically Altered Structure,SCT,4147007,Mass,,,,"
            "SCT,64033007,Kidney,SCT,24028007,Right\n")
    template = template_from_slicer_csv(text, template_id="kidney", title="Kidney")
    assert template.codes == ["LEFT_KIDNEY", "RIGHT_KIDNEY_MASS"]
    mass = template.label("RIGHT_KIDNEY_MASS")
    assert mass.category == "lesion" and mass.value == 6 and mass.codes["region_modifier"].meaning == "Right"
    with pytest.raises(InputError, match=r"line 2\.Type: Type code is incomplete"):
        template_from_slicer_csv(text.replace("SCT,64033007,Kidney,SCT,7771000", "SCT,,Kidney,SCT,7771000"))
    with pytest.raises(InputError, match=r"missing column\(s\) LabelValue"):
        template_from_slicer_csv("Name,Color_R\nx,1\n", file="c.csv")


def test_dcmqi_and_nnunet_exports() -> None:
    lung_ct = builtin_template("lung-ct")
    meta = dcmqi_segmentation_metadata(lung_ct, values=[1, 2, 11, 12])
    segments = meta["segmentAttributes"][0]
    assert [s["labelID"] for s in segments] == [1, 2, 11, 12]
    assert segments[0]["SegmentedPropertyTypeCodeSequence"] == {
        "CodeValue": "39607008", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Lung"}
    assert segments[0]["SegmentedPropertyTypeModifierCodeSequence"]["CodeMeaning"] == "Left"
    assert segments[2]["SegmentDescription"] == "NODULE_1" and segments[2]["AnatomicRegionSequence"]["CodeValue"] == \
        "39607008"
    with pytest.raises(InputError, match="labelmap value 200 is not a label of template lung-ct"):
        dcmqi_segmentation_metadata(lung_ct, values=[200])
    dataset = nnunet_dataset(lung_ct)
    assert dataset["labels"] == {"background": 0, "LUNG_LEFT": 1, "LUNG_RIGHT": 2, "LUNG_LEFT_UPPER_LOBE": 3,
                                 "LUNG_LEFT_LOWER_LOBE": 4, "LUNG_RIGHT_UPPER_LOBE": 5, "LUNG_RIGHT_MIDDLE_LOBE": 6,
                                 "LUNG_RIGHT_LOWER_LOBE": 7, "NODULE": 8}
    assert sorted(dataset["labels"].values()) == list(range(9))  # nnU-Net v2 needs consecutive labels
    mapping = nnunet_value_map(lung_ct)
    assert mapping[10] == 8 and mapping[11] == 8 and mapping[99] == 8 and mapping[7] == 7


def test_slicer_terminology_refuses_codes_it_cannot_tell_apart() -> None:
    data = lung()
    _label(data, "LUNG_RIGHT")["codes"]["type_modifier"] = _label(data, "LUNG_LEFT")["codes"]["type_modifier"]
    with pytest.raises(InputError, match="LUNG_RIGHT and LUNG_LEFT have the same category, type and modifier"):
        slicer_terminology(template_from_dict(data))


@pytest.mark.parametrize("template_id", BUILTINS)
@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_every_builtin_exports_to_every_format_from_the_command_line(template_id: str, fmt: str,
                                                                     tmp_path: Path) -> None:
    """Must show: every built-in template validates and exports to every format."""
    out = tmp_path / f"out.{fmt}"
    assert main(["template", "export", template_id, "--to", fmt, "--out", str(out)]) == 0
    text = out.read_text("utf-8")
    if fmt in ("slicer-term", "dcmqi", "nnunet"):
        json.loads(text)
    elif fmt == "slicer-csv":
        assert template_from_slicer_csv(text) == builtin_template(template_id)
    else:
        assert template_from_flat_csv(text) == builtin_template(template_id)


def test_template_cli_validate_import_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["template", "validate", "lung-ct"]) == 0
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(_mutate(lambda d: (_label(d, "LUNG_RIGHT").update(value=1),
                                                    _label(d, "NODULE").update(parent="X")))), "utf-8")
    capsys.readouterr()
    assert main(["template", "validate", str(broken), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert len(result["problems"]) == 2 and not result["valid"]
    csv_file = tmp_path / "t.csv"
    assert main(["template", "export", "thyroid-us-tirads", "--to", "csv", "--out", str(csv_file)]) == 0
    out = tmp_path / "t.json"
    assert main(["template", "import", str(csv_file), "--from", "csv", "--out", str(out)]) == 0
    assert json.loads(out.read_text("utf-8")) == builtin_template("thyroid-us-tirads").to_dict()
    capsys.readouterr()
    assert main(["template", "list", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == list(BUILTINS)
    not_json = tmp_path / "bad.json"
    not_json.write_text("{", "utf-8")
    assert main(["template", "validate", str(not_json)]) == 2
    assert "bad.json: not valid JSON" in capsys.readouterr().err
    assert main(["template", "export", "no-such-template", "--to", "csv", "--out", str(tmp_path / "x")]) == 2
    assert "'no-such-template' is neither a file nor a built-in template" in capsys.readouterr().err


def test_template_option_of_lower_modules_reads_templates() -> None:
    """RTSSBridge/QCMetrics --template FILE|ID goes through the loader mmanno installs."""
    from MultiModalAnnotationLib.cli import install_template_loader

    install_template_loader()
    label_set = cliutil.load_label_set("brain-mets-mr")
    assert label_set.template_id == "brain-mets-mr" and label_set.by_value(2).code == "SKULL"  # type: ignore[union-attr]
    path = REPO / "Resources" / "templates" / "lung-ct.json"
    assert cliutil.load_label_set(str(path)).by_code("LUNG_LEFT").value == 1


@pytest.mark.parametrize("name", MY_SCHEMAS)
def test_schemas_are_versioned_and_describe_every_property_with_an_example(name: str) -> None:
    """STYLE habit 4: $id ending /vN; every property has a description and examples."""
    import jsonschema

    schema = json.loads((REPO / "Resources" / "schemas" / f"{name}.schema.json").read_text("utf-8"))
    assert schema["$id"].endswith("/v1")
    jsonschema.validators.validator_for(schema).check_schema(schema)
    missing = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if "description" not in sub or "examples" not in sub:
                    missing.append(f"{where}.{key}")
                walk(sub, f"{where}.{key}")
            for key in ("items", "additionalProperties"):
                if isinstance(node.get(key), dict):
                    walk(node[key], where)
            for key, sub in node.get("$defs", {}).items():
                walk(sub, f"$defs.{key}")
            for sub in node.get("oneOf", []):
                walk(sub, where)
    walk(schema, name)
    assert not missing, missing


# --------------------------------------------------------------------------- Slicer (real MRML)
@pytest.mark.slicer
@pytest.mark.parametrize("template_id", BUILTINS)
def test_slicer_terminology_export_loads_with_slicers_terminology_logic(template_id: str, tmp_path: Path) -> None:
    """Must show: the .term.json loads with vtkSlicerTerminologiesModuleLogic; every label's entry
    deserializes to the template's codes and is found by its 3dSlicerLabel."""
    import slicer

    from MultiModalAnnotationLib.mrml.templates import load_terminology
    from MultiModalAnnotationLib.templates.exports import slicer_terminology_entry

    template = builtin_template(template_id)
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    name = load_terminology(template, logic, str(tmp_path))
    categories = {(c["CodingSchemeDesignator"], c["CodeValue"])
                  for c in slicer_terminology(template)["SegmentationCodes"]["Category"]}
    assert logic.GetNumberOfCategoriesInTerminology(name) == len(categories)
    for label in template.labelmap_labels():
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(slicer_terminology_entry(template, label), entry)
        assert entry.GetTerminologyContextName() == name
        assert entry.GetCategoryObject().GetCodeValue() == label.codes["category"].value
        assert entry.GetTypeObject().GetCodeValue() == label.codes["type"].value
        modifier = label.codes.get("type_modifier")
        assert (entry.GetTypeModifierObject().GetCodeValue() or "") == (modifier.value if modifier else "")
        found = slicer.vtkSlicerTerminologyEntry()
        assert logic.FindTypeInTerminologyBy3dSlicerLabel(name, label.name, found), label.code
        assert found.GetTypeObject().GetCodeValue() == label.codes["type"].value


@pytest.mark.slicer
@pytest.mark.parametrize("template_id", ["lung-ct", "ra-hand-foot-mtss"])
def test_slicer_colour_table_export_loads_in_slicer(template_id: str, tmp_path: Path, mrml_scene: Any) -> None:
    """The colour-table CSV is read by Slicer's own storage node with names, colours and codes."""
    template = builtin_template(template_id)
    path = tmp_path / f"{template_id}.csv"
    path.write_text(slicer_color_table_csv(template), "utf-8")
    node = mrml_scene.AddNewNodeByClass("vtkMRMLColorTableNode", template_id)
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLColorTableStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    for label in template.labelmap_labels():
        value = int(label.value or 0)
        assert node.GetColorName(value) == label.code
        rgba = [0.0, 0.0, 0.0, 0.0]
        node.GetColor(value, rgba)
        assert [round(c * 255) for c in rgba[:3]] == list(label.color or ())
        assert node.GetTerminologyType(value).GetCodeValue() == label.codes["type"].value


def test_panel_lists_the_builtin_templates() -> None:
    """The module file's BUILTIN_TEMPLATES (needed before the core is importable) equals the core's list."""
    import ast

    tree = ast.parse((REPO / "MultiModalAnnotation" / "MultiModalAnnotation.py").read_text("utf-8"))
    assigned = next(n for n in tree.body if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "BUILTIN_TEMPLATES" for t in n.targets))
    assert tuple(ast.literal_eval(assigned.value)) == tuple(builtin_template_ids())


def test_demo_packages_the_ground_truth_annotation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mmanno demo ends with the annotation document, its package (verified) and the template exports."""
    assert main(["demo", "--kind", "us-thyroid", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    report = json.loads((tmp_path / "demo" / "report.json").read_text("utf-8"))
    assert report["annotation"]["template"] == "thyroid-us-tirads 1.0.0"
    names = [c["check"] for c in report["checks"] if c["passed"]]
    assert any(n.startswith("export package matches its manifest") for n in names)
    assert any(n.startswith("template exports") for n in names)
    assert (tmp_path / "demo" / "annotation_package" / "manifest.json").is_file()
    assert "Annotation document and export package" in (tmp_path / "demo" / "report.html").read_text("utf-8")


@pytest.mark.skipif(__import__("sys").version_info < (3, 10),
                    reason="dcmqi is a dev dependency of the Python >= 3.10 leg only (pyproject dev extra)")
def test_dcmqi_metadata_makes_a_dicom_seg_with_the_template_codes(sample_case: Any, tmp_path: Path) -> None:
    """The dcmqi export is what dcmqi's itkimage2segimage reads: the sample's labelmap and CT series
    become a DICOM SEG whose segments carry the template's labels and SNOMED CT codes."""
    import shutil
    import subprocess
    import sys

    import numpy as np
    import pydicom

    from RTSSBridgeLib.nifti import read_nifti

    exe = shutil.which("itkimage2segimage") or str(Path(sys.executable).with_name("itkimage2segimage"))
    assert Path(exe).exists(), "itkimage2segimage missing: install the dev extra (pip install -e '.[dev]')"
    case = Path(sample_case("ct-chest", slices=12).root)
    labels = case / "ground_truth" / "ct_labels.nii.gz"
    values = sorted(int(v) for v in np.unique(read_nifti(labels).voxels) if v)
    template = builtin_template("lung-ct")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(dcmqi_segmentation_metadata(template, values)), "utf-8")
    out = tmp_path / "seg.dcm"
    result = subprocess.run([exe, "--inputImageList", str(labels),
                             "--inputDICOMDirectory", str(case / "dicom" / "CT_CHEST"),
                             "--inputMetadata", str(meta), "--outputDICOM", str(out)],
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    seg = pydicom.dcmread(str(out))
    assert seg.Modality == "SEG"
    label_set = template.to_label_set()
    assert len(seg.SegmentSequence) == len(values)
    for item, value in zip(seg.SegmentSequence, values):
        info = label_set.by_value(value)
        assert info is not None and item.SegmentLabel == info.name
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == info.category.value  # type: ignore[union-attr]
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == info.type.value  # type: ignore[union-attr]
        if info.type_modifier is not None:
            modifier = item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
            assert modifier.CodeValue == info.type_modifier.value
