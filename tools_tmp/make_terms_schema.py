import json
def s(desc, ex, **kw):
    d = dict(kw); d["description"] = desc; d["examples"] = ex; return d
words = {"type": "array", "items": {"type": "string", "minLength": 1}}
lang = {"type": "object", "additionalProperties": False, "description": "Words by language.", "examples": [{"zh": ["左侧"], "en": ["left"]}],
        "properties": {"zh": s("Chinese words (matched as written).", [["左侧", "左"]], **words), "en": s("English words (whole words, case-insensitive unless written in capitals).", [["left"]], **words)}}
location = {"type": "object", "additionalProperties": False, "required": ["side"],
  "description": "A location phrase: its words and the template codes (or location attribute) it names.",
  "examples": [{"codes": ["LUNG_RIGHT_UPPER_LOBE"], "side": "right", "zh": ["右肺上叶"], "en": ["right upper lobe", "RUL"]}],
  "properties": {
    "codes": s("Template codes the phrase names (any of them).", [["LUNG_RIGHT_UPPER_LOBE"]], type="array", items={"type": "string", "pattern": "^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$"}),
    "attribute": {"type": "object", "additionalProperties": False, "required": ["key", "value"], "description": "A location attribute value the phrase names instead of codes.", "examples": [{"key": "lobe", "value": "right"}],
                  "properties": {"key": s("Attribute key.", ["lobe"], type="string"), "value": s("Attribute value.", ["right"], type="string")}},
    "side": s("Side of the patient the phrase also claims (null: none; liver lobes are not the patient's side).", ["right"], type=["string", "null"], enum=["left", "right", "bilateral", None]),
    "zh": s("Chinese words.", [["右肺上叶"]], **words), "en": s("English words.", [["right upper lobe"]], **words)}}
enh = {"type": "object", "additionalProperties": False, "required": ["class"], "description": "Enhancement words of one class.", "examples": [{"class": "none", "zh": ["无强化"], "en": ["no enhancement"]}],
  "properties": {"class": s("Enhancement class.", ["none"], type="string", enum=["none", "present", "mild", "marked", "solid", "ring", "arterial", "washout", "capsule"]),
                 "zh": s("Chinese words.", [["无强化"]], **words), "en": s("English words.", [["no enhancement"]], **words)}}
role = {"type": "object", "additionalProperties": False, "required": ["before", "after"], "description": "Words before or after a measurement that give it this role.", "examples": [{"before": {"zh": ["距"], "en": ["distance"]}, "after": {"zh": [], "en": ["from"]}}],
  "properties": {"before": lang, "after": lang}}
schema = {
 "$schema": "https://json-schema.org/draft/2020-12/schema",
 "$id": "https://multimodalannotation.github.io/schemas/report-terms/v1",
 "title": "MultiModalAnnotation report vocabulary, version 1",
 "description": "Words of radiology reports the consistency aids (R-8.4.2.4) turn into claims: locations, laterality, enhancement and measurement roles.",
 "type": "object", "additionalProperties": False,
 "required": ["schema", "id", "version", "locations", "liver_segments", "attribute_locations", "roi_name", "laterality", "not_laterality", "enhancement", "enhancement_attribute_values", "size_roles"],
 "properties": {
  "schema": s("The $id of this schema.", ["https://multimodalannotation.github.io/schemas/report-terms/v1"], type="string", const="https://multimodalannotation.github.io/schemas/report-terms/v1"),
  "id": s("Vocabulary id.", ["report-terms"], type="string"),
  "version": s("Vocabulary version.", ["1.0.0"], type="string"),
  "description": s("What the vocabulary is for.", ["Words of radiology reports."], type="string"),
  "locations": {"type": "array", "items": location, "description": "Location phrases.", "examples": [[location["examples"][0]]]},
  "liver_segments": {"type": "object", "additionalProperties": False, "required": ["codes"], "description": "Couinaud segment numbers written S5, S5段, segment V.", "examples": [{"codes": {"5": "LIVER_S5"}}],
                     "properties": {"codes": s("Segment number -> template code.", [{"5": "LIVER_S5"}], type="object", additionalProperties={"type": "string"})}},
  "attribute_locations": {"type": "array", "description": "Attributes of a region that tell where it lies.", "examples": [[{"attribute": "segment", "values": {"S5": "LIVER_S5"}}]],
                          "items": {"type": "object", "additionalProperties": False, "required": ["attribute", "values"], "description": "One location attribute.", "examples": [{"attribute": "segment", "values": {"S5": "LIVER_S5"}}],
                                    "properties": {"attribute": s("Attribute key.", ["segment"], type="string"), "values": s("Attribute value -> template code.", [{"S5": "LIVER_S5"}], type="object", additionalProperties={"type": "string"})}}},
  "roi_name": {"type": "object", "additionalProperties": False, "required": ["attribute", "sides", "parts"], "description": "Seed 002 ROI names (R_lat_temp): side prefix and location parts.", "examples": [{"attribute": "roi_name", "sides": {"L": "left"}, "parts": {"temp": "BRAIN_TEMPORAL_LOBE"}}],
               "properties": {"attribute": s("Attribute holding the ROI name.", ["roi_name"], type="string"),
                              "sides": s("Prefix -> side.", [{"L": "left", "R": "right"}], type="object", additionalProperties={"type": "string", "enum": ["left", "right"]}),
                              "parts": s("Name part -> template code.", [{"temp": "BRAIN_TEMPORAL_LOBE"}], type="object", additionalProperties={"type": "string"})}},
  "laterality": {"type": "object", "additionalProperties": False, "required": ["left", "right", "bilateral"], "description": "Words of each side.", "examples": [{"left": {"zh": ["左"], "en": ["left"]}, "right": {"zh": ["右"], "en": ["right"]}, "bilateral": {"zh": ["双侧"], "en": ["bilateral"]}}],
                 "properties": {"left": lang, "right": lang, "bilateral": lang}},
  "not_laterality": lang,
  "enhancement": {"type": "array", "items": enh, "description": "Enhancement words by class (negations first among equals: longest words are matched first).", "examples": [[enh["examples"][0]]]},
  "enhancement_attribute_values": s("Template enhancement attribute value -> class.", [{"ring": "ring", "none": "none"}], type="object", additionalProperties={"type": "string"}),
  "size_roles": {"type": "object", "additionalProperties": False, "required": ["distance", "thickness", "change"], "description": "Words that make a measurement a distance, a thickness or a change instead of the region's size.", "examples": [{"distance": role["examples"][0], "thickness": role["examples"][0], "change": role["examples"][0]}],
                 "properties": {"distance": role, "thickness": role, "change": role}},
 }}
json.dump(schema, open("/work/wt8/Resources/schemas/report-terms.schema.json", "w"), indent=2, ensure_ascii=False)
open("/work/wt8/Resources/schemas/report-terms.schema.json", "a").write("\n")
