import json
ID = "https://multimodalannotation.github.io/schemas/report-links/v1"
idpat = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
def s(desc, ex, **kw):
    d = dict(kw); d["description"] = desc; d["examples"] = ex; return d
report = {
  "type": "object", "additionalProperties": False, "required": ["id", "language", "text", "sha256"],
  "description": "A report (or report section) of the case: its de-identified text and the SHA-256 of its UTF-8 bytes.",
  "examples": [{"id": "RPT_CT", "language": "zh", "text": "右肺上叶见一实性结节，大小约1.5×1.2 cm。", "sha256": "0" * 64}],
  "properties": {
    "id": s("Report id, unique in the document.", ["RPT_CT"], type="string", pattern=idpat),
    "language": s("zh, en or mixed (Chinese with English sentences).", ["zh"], type="string", enum=["zh", "en", "mixed"]),
    "text": s("The report text exactly as linked (offsets count its Unicode code points).", ["右肺上叶见一实性结节。"], type="string", minLength=1),
    "sha256": s("SHA-256 (hex) of the UTF-8 bytes of text; a mismatch means the text was edited without re-anchoring.", ["9f2c" + "0" * 60], type="string", pattern="^[0-9a-f]{64}$"),
    "offset_unit": s("What offsets count: Unicode code points (Python str indices; a UTF-16 surrogate pair is one).", ["unicode_code_points"], type="string", const="unicode_code_points"),
    "title": s("Which report and part it is (never a patient identifier).", ["CT chest report, findings"], type="string", maxLength=200),
  }}
check = {
  "type": "object", "additionalProperties": False, "required": ["aspect", "result"],
  "description": "One comparison of a claim of the text with the region (8.4.2.4).",
  "examples": [{"aspect": "laterality", "claim": "左", "span": [0, 1], "result": "inconsistent", "reason": "text says left; the region's centroid is 62.1 mm to the patient's right of the midline"}],
  "properties": {
    "aspect": s("What was compared.", ["size"], type="string", enum=["size", "laterality", "location", "enhancement"]),
    "claim": s("The words of the text that make the claim.", ["1.5×1.2 cm"], type="string"),
    "span": s("Code points [start, end) of the claim in the report.", [[12, 22]], type="array", minItems=2, maxItems=2, items={"type": "integer", "minimum": 0}),
    "value": s("The claim in machine form (sizes in mm, side, template codes, enhancement class).", [{"largest_mm": 15.0}], type=["object", "string", "number", "array", "null"]),
    "result": s("Outcome of this comparison.", ["consistent"], type="string", enum=["consistent", "inconsistent", "unchecked"]),
    "reason": s("Why, in words a person can confirm.", ["text 15.0 mm; region largest diameter 14.6 mm (tolerance 3.0 mm)"], type="string"),
  }}
region = {
  "type": "object", "description": "What was measured on the linked region when the link was checked.",
  "examples": [{"centroid_lps": [-62.0, 10.5, -180.0], "largest_diameter_mm": 14.6, "side": "right", "locations": ["LUNG_RIGHT"]}],
  "properties": {
    "centroid_lps": s("Centroid in patient LPS millimetres (null without patient geometry).", [[-62.0, 10.5, -180.0]], type=["array", "null"], items={"type": "number"}),
    "largest_diameter_mm": s("Largest diameter of the region in millimetres (null for a point).", [14.6], type=["number", "null"]),
    "axial_diameter_mm": s("Largest in-plane (slice) diameter in millimetres.", [13.9], type=["number", "null"]),
    "side": s("Side of the patient the region lies on.", ["right"], type=["string", "null"], enum=["left", "right", "midline", "both", None]),
    "side_source": s("Where the side comes from: geometry (centroid against the midline), label, or attribute.", ["geometry"], type=["string", "null"]),
    "locations": s("Template codes of the structures the region lies in (its own label and ancestors, containing masks, location attributes).", [["LUNG_RIGHT"]], type="array", items={"type": "string"}),
    "enhancement": s("The region's enhancement attribute, when it has one.", ["ring"], type=["string", "null"]),
  }}
link = {
  "type": "object", "additionalProperties": False, "required": ["id", "text", "target", "semantic_type", "consistency", "anchor"],
  "description": "One link of a report fragment to an annotation (8.4.2.2 - 8.4.2.5).",
  "examples": [{"id": "TXT_SPAN_01", "text": {"report_id": "RPT_CT", "start": 0, "end": 10, "quote": "右肺上叶见一实性结节", "prefix": "", "suffix": "，大小约1.5×1.2 cm。", "sentence_index": 0, "level": "fragment"},
                "target": {"annotation_id": "NODULE_01", "kind": "segment"}, "semantic_type": "finding",
                "consistency": {"state": "consistent", "note": "", "source": "automatic", "checks": []},
                "anchor": {"state": "anchored", "note": ""}}],
  "properties": {
    "id": s("Link id, unique in the document (the id the target's cross_modal_links names).", ["TXT_SPAN_01"], type="string", pattern=idpat),
    "text": {"type": "object", "additionalProperties": False, "required": ["report_id", "start", "end", "quote"],
             "description": "The text reference: report, code-point span [start, end), quoted text with context (W3C TextPosition + TextQuote selectors) and sentence.",
             "examples": [{"report_id": "RPT_CT", "start": 0, "end": 10, "quote": "右肺上叶见一实性结节", "prefix": "", "suffix": "，", "sentence_index": 0, "level": "fragment"}],
             "properties": {
               "report_id": s("Id of the report.", ["RPT_CT"], type="string", pattern=idpat),
               "start": s("First code point of the fragment.", [0], type="integer", minimum=0),
               "end": s("Code point after the fragment (exclusive).", [10], type="integer", minimum=1),
               "quote": s("The fragment's text (report.text[start:end]).", ["右肺上叶见一实性结节"], type="string", minLength=1),
               "prefix": s("Up to 32 code points before the fragment (to find it again).", ["结论："], type="string", maxLength=32),
               "suffix": s("Up to 32 code points after the fragment.", ["，大小约1.5 cm"], type="string", maxLength=32),
               "sentence_index": s("Index of the sentence the fragment starts in (mmanno text split).", [0], type="integer", minimum=0),
               "level": s("sentence (the span is a whole sentence) or fragment (8.4.2.3).", ["fragment"], type="string", enum=["sentence", "fragment"]),
             }},
    "target": {"type": "object", "additionalProperties": False, "required": ["annotation_id", "kind"],
               "description": "The annotated region: an annotation of this document.",
               "examples": [{"annotation_id": "NODULE_01", "kind": "segment"}],
               "properties": {
                 "annotation_id": s("Id of the target annotation.", ["NODULE_01"], type="string", pattern=idpat),
                 "kind": s("segment (mask), markup (point), box, polygon or attribute (case-level).", ["segment"], type="string", enum=["segment", "markup", "box", "polygon", "attribute"]),
               }},
    "semantic_type": s("8.4.2.2: finding/sign (征象), diagnosis (诊断), attribute description (属性描述), recommendation (建议).", ["finding"], type="string", enum=["finding", "diagnosis", "attribute", "recommendation"]),
    "consistency": {"type": "object", "additionalProperties": False, "required": ["state", "source"],
                    "description": "Consistency state (8.4.2.4): automatic proposals of the consistency aids or a person's decision.",
                    "examples": [{"state": "inconsistent", "note": "text says left; region on the right", "source": "automatic", "checks": []}],
                    "properties": {
                      "state": s("consistent, inconsistent (enters QC) or unchecked.", ["consistent"], type="string", enum=["consistent", "inconsistent", "unchecked"]),
                      "note": s("Why (required in words for an inconsistent link).", ["text 15 mm; region 31 mm"], type="string", maxLength=2000),
                      "source": s("automatic: proposed by the consistency aids; person: decided by the person in 'by'.", ["automatic"], type="string", enum=["automatic", "person"]),
                      "checks": {"type": "array", "items": check, "description": "The comparisons made.", "examples": [[]]},
                      "region": region,
                      "by": s("Pseudonymous id of the person who decided.", ["R01"], type="string", maxLength=64),
                      "time": s("When the person decided (ISO 8601 with zone).", ["2026-03-12T10:20:00Z"], type="string", format="date-time"),
                    }},
    "anchor": {"type": "object", "additionalProperties": False, "required": ["state"],
               "description": "Whether the span still points at the quoted text after edits of the report.",
               "examples": [{"state": "moved", "note": "moved from 10..20 to 14..24 after the report text changed"}],
               "properties": {
                 "state": s("anchored (unchanged), moved (found again, offsets updated), stale (not found; offsets kept, must be relinked).", ["anchored"], type="string", enum=["anchored", "moved", "stale"]),
                 "note": s("What happened.", ["moved from 10..20 to 14..24 after the report text changed"], type="string", maxLength=2000),
               }},
    "created": {"type": "object", "additionalProperties": False, "required": ["time", "actor"],
                "description": "Who made the link, and when.", "examples": [{"time": "2026-03-12T10:20:00Z", "actor": "A01"}],
                "properties": {
                  "time": s("ISO 8601 with zone.", ["2026-03-12T10:20:00Z"], type="string"),
                  "actor": s("Pseudonymous id or software.", ["A01"], type="string", minLength=1, maxLength=64),
                }},
  }}
schema = {
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": ID,
  "title": "MultiModalAnnotation image-text links, version 1",
  "description": "The report_links section of an annotation document (R-8.4.2): reports with their SHA-256 and links of code-point spans to annotated regions with semantic type and consistency state.",
  "type": "object", "additionalProperties": False, "required": ["reports", "links"],
  "properties": {
    "offset_unit": s("What offsets count.", ["unicode_code_points"], type="string", const="unicode_code_points"),
    "reports": {"type": "array", "items": report, "description": "The reports of the case.", "examples": [[report["examples"][0]]]},
    "links": {"type": "array", "items": link, "description": "The links.", "examples": [[link["examples"][0]]]},
  }}
json.dump(schema, open("/work/wt8/Resources/schemas/report-links.schema.json", "w"), indent=2, ensure_ascii=False)
open("/work/wt8/Resources/schemas/report-links.schema.json", "a").write("\n")
