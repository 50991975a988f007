"""Report text model (R-8.4.2.3): sentence splitting of Chinese, English and mixed reports with
code-point offsets, SHA-256, UTF-16 conversion and re-anchoring of links when the text changes."""

from __future__ import annotations

import hashlib
from typing import List, Tuple

import pytest

from MultiModalAnnotationLib.reports_text import (
    Report,
    code_point_to_utf16,
    detect_language,
    make_anchor,
    reanchor,
    split_sentences,
    utf16_to_code_point,
)
from RTSSBridgeLib.errors import InputError

#: (report text, expected sentences) - 24 reports: Chinese, English, mixed; decimals, abbreviations,
#: list numbers, brackets, quotes, full-width punctuation, line breaks, characters beyond the BMP.
REPORTS: List[Tuple[str, List[str]]] = [
    ("右肺上叶见一实性结节，大小约1.5×1.2 cm，边缘可见毛刺。纵隔未见肿大淋巴结。",
     ["右肺上叶见一实性结节，大小约1.5×1.2 cm，边缘可见毛刺。", "纵隔未见肿大淋巴结。"]),
    ("A 1.5 cm nodule in the right upper lobe. No pleural effusion.",
     ["A 1.5 cm nodule in the right upper lobe.", "No pleural effusion."]),
    ("Compared with the prior exam, e.g. 2023-05-01, the lesion is stable. Dr. Wang reviewed it.",
     ["Compared with the prior exam, e.g. 2023-05-01, the lesion is stable.", "Dr. Wang reviewed it."]),
    ("1. 左肺下叶结节，约8 mm。2. 右肺中叶条索影。3. 建议3个月后复查。",
     ["1. 左肺下叶结节，约8 mm。", "2. 右肺中叶条索影。", "3. 建议3个月后复查。"]),
    ("Findings:\n1. Right frontal lobe ring-enhancing lesion, approx. 2.3 cm.\n2. Mild perilesional edema.",
     ["Findings:", "1. Right frontal lobe ring-enhancing lesion, approx. 2.3 cm.", "2. Mild perilesional edema."]),
    ("肝S5段见一低密度灶（约1.2 cm；边界清），动脉期明显强化，门脉期廓清。考虑肝细胞癌？",
     ["肝S5段见一低密度灶（约1.2 cm；边界清），动脉期明显强化，门脉期廓清。", "考虑肝细胞癌？"]),
    ("甲状腺右叶见一低回声结节，大小约0.8×0.6 cm，纵横比>1；TI-RADS 4类。建议FNA。",
     ["甲状腺右叶见一低回声结节，大小约0.8×0.6 cm，纵横比>1；", "TI-RADS 4类。", "建议FNA。"]),
    ("The mass measures 3.2 x 2.1 x 1.9 cm. It abuts the pleura, i.e. T3 disease! Recommend PET-CT.",
     ["The mass measures 3.2 x 2.1 x 1.9 cm.", "It abuts the pleura, i.e. T3 disease!", "Recommend PET-CT."]),
    ("左侧颞叶见环形强化灶，直径约15毫米。右侧小脑半球另见一枚小结节，约3 mm。",
     ["左侧颞叶见环形强化灶，直径约15毫米。", "右侧小脑半球另见一枚小结节，约3 mm。"]),
    ("Impression: Lung-RADS 4A. Follow-up CT in 3 mo. is advised.",
     ["Impression: Lung-RADS 4A.", "Follow-up CT in 3 mo. is advised."]),
    ("双肺纹理增多。右肺下叶见磨玻璃结节，约0.6cm。No change vs. 2022. 请结合临床。",
     ["双肺纹理增多。", "右肺下叶见磨玻璃结节，约0.6cm。", "No change vs. 2022.", "请结合临床。"]),
    ("病灶位于右肺上叶（RUL）。The nodule is solid. 建议随访。",
     ["病灶位于右肺上叶（RUL）。", "The nodule is solid.", "建议随访。"]),
    ("他说：“右侧病灶较前增大。”随访间隔3个月。",
     ["他说：“右侧病灶较前增大。”", "随访间隔3个月。"]),
    ("Erosion at MCP2 (score 3). JSN at PIP4 (score 2).",
     ["Erosion at MCP2 (score 3).", "JSN at PIP4 (score 2)."]),
    ("结节大小约１．５ｃｍ。边缘光整！",
     ["结节大小约１．５ｃｍ。", "边缘光整！"]),
    ("See Fig. 2 and No. 3 lesion. Slice thickness 1.25 mm.",
     ["See Fig. 2 and No. 3 lesion.", "Slice thickness 1.25 mm."]),
    ("一、影像所见：右肺上叶结节。二、诊断意见：考虑良性。",
     ["一、影像所见：右肺上叶结节。", "二、诊断意见：考虑良性。"]),
    ("The U.S. guideline (ACR TI-RADS) applies. Score 5 pts.",
     ["The U.S. guideline (ACR TI-RADS) applies.", "Score 5 pts."]),
    ("𠮷侧病灶约2 cm。右侧正常。",
     ["𠮷侧病灶约2 cm。", "右侧正常。"]),
    ("Is it malignant?! Probably not... Biopsy is optional.",
     ["Is it malignant?!", "Probably not...", "Biopsy is optional."]),
    ("　右肺门增大。  \n\n左肺未见异常。 ",
     ["右肺门增大。", "左肺未见异常。"]),
    ("Lesion at 2 o'clock; size .5 cm. Stable.",
     ["Lesion at 2 o'clock;", "size .5 cm.", "Stable."]),
    ("右肾见一1.5 cm × 1.2 cm囊性灶，CT值约5 HU。Bosniak I类。",
     ["右肾见一1.5 cm × 1.2 cm囊性灶，CT值约5 HU。", "Bosniak I类。"]),
    ("T2WI shows a hyperintense lesion in the L. frontal lobe. Size approx. 12 mm.",
     ["T2WI shows a hyperintense lesion in the L. frontal lobe.", "Size approx. 12 mm."]),
]


@pytest.mark.parametrize("text,expected", REPORTS, ids=[f"report{n:02d}" for n in range(len(REPORTS))])
def test_sentences_and_offsets(text: str, expected: List[str]) -> None:
    """Must show (R-8.4.2.3): 24 zh/en/mixed reports split into the expected sentences; every
    sentence is ``text[start:end]`` in code points, indices run 0..n-1, and nothing but white space
    lies between sentences."""
    sentences = split_sentences(text)
    assert [s.text for s in sentences] == expected
    assert [s.index for s in sentences] == list(range(len(expected)))
    last = 0
    for s in sentences:
        assert text[s.start:s.end] == s.text
        assert text[last:s.start].strip() == ""
        last = s.end
    assert text[last:].strip() == ""


def test_at_least_twenty_bilingual_reports() -> None:
    languages = [detect_language(t) for t, _ in REPORTS]
    assert len(REPORTS) >= 20 and {"zh", "en", "mixed"} <= set(languages)


def test_report_sha256_and_json_round_trip() -> None:
    text = REPORTS[0][0]
    report = Report("RPT_CT", text)
    assert report.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert report.language == "zh"
    assert Report.from_dict(report.to_dict()) == report
    changed = {**report.to_dict(), "text": text + "补充。"}
    with pytest.raises(InputError, match=r"sha256 .* is not the SHA-256 of its text"):
        Report.from_dict(changed)
    with pytest.raises(InputError, match="the text is empty"):
        Report("R1", "  ")
    with pytest.raises(InputError, match="is not a valid id"):
        Report("bad id", "x")


def test_utf16_offsets_for_qt() -> None:
    """Qt cursors count UTF-16 units: a character beyond the BMP is two units but one code point."""
    text = "𠮷侧病灶约2 cm。"
    assert code_point_to_utf16(text, 1) == 2
    assert utf16_to_code_point(text, 2) == 1
    assert all(utf16_to_code_point(text, code_point_to_utf16(text, n)) == n for n in range(len(text) + 1))
    with pytest.raises(InputError, match="inside the surrogate pair"):
        utf16_to_code_point(text, 1)
    with pytest.raises(InputError, match="beyond the text"):
        utf16_to_code_point(text, 100)


def test_span_checks() -> None:
    with pytest.raises(InputError, match="not inside the text"):
        make_anchor("abc", 2, 9)
    with pytest.raises(InputError, match="separates the combining mark"):
        make_anchor("cafe\u0301 noir", 0, 4)


def test_reanchoring_moves_or_marks_stale_never_shifts_silently() -> None:
    """R-8.4.2.3: after an edit, a quote found again moves (with the old and new place); a quote no
    longer present is stale with its old offsets; two equal candidates make it stale too."""
    old = "右肺上叶见一结节，大小约1.5 cm。左肺清晰。"
    anchor = make_anchor(old, 0, 8)
    inserted = "检查所见：" + old
    moved = reanchor(anchor, inserted)
    assert moved.state == "moved" and (moved.anchor.start, moved.anchor.end) == (5, 13)
    assert inserted[moved.anchor.start:moved.anchor.end] == anchor.quote
    same = reanchor(anchor, old + "补充说明。")
    assert same.state == "anchored" and same.anchor.start == 0
    gone = reanchor(anchor, "左肺上叶见一结节，大小约1.5 cm。")
    assert gone.state == "stale" and (gone.anchor.start, gone.anchor.end) == (0, 8)
    twice = reanchor(make_anchor("A. B.", 0, 2), "x A. y A. z")
    assert twice.state == "stale" and "a person must choose" in twice.note
