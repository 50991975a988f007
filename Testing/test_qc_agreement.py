"""Agreement statistics (R-9.1.2, Appendix D): hand-computed examples and reference implementations
(scikit-learn ``cohen_kappa_score``, statsmodels ``fleiss_kappa``, scipy ``pearsonr``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from QCMetricsLib.agreement import (
    cohen_kappa,
    confusion_matrix,
    fleiss_kappa,
    fleiss_kappa_from_table,
    fleiss_table,
    kappa_from_matrix,
    pearson,
    scott_pi,
)
from RTSSBridgeLib.errors import InputError


def test_appendix_d_kappa_by_hand() -> None:
    """Appendix D: Acc = sum N_jj / sum N_ij, p_e = sum row_j col_j / N^2, kappa = (Acc - p_e)/(1 - p_e).
    Matrix [[20, 5], [10, 15]]: Acc = 35/50 = 0.7, p_e = (25*30 + 25*20)/2500 = 0.5, kappa = 0.4."""
    k = kappa_from_matrix([[20, 5], [10, 15]])
    assert k.value == pytest.approx(0.4, abs=1e-15)
    assert k.details == {"observed_agreement": 0.7, "chance_agreement": 0.5}


def test_weighted_kappa_by_hand() -> None:
    """Three ordinal categories, matrix [[10, 2, 0], [3, 8, 2], [0, 1, 4]] (N = 30): with linear
    weights |i-j|/2 the observed disagreement is (2+3+2+1)*0.5 = 4 and the expected one 11.8, so
    kappa_w = 1 - 4/11.8."""
    m = np.array([[10, 2, 0], [3, 8, 2], [0, 1, 4]])
    rows, cols = m.sum(1), m.sum(0)
    expected = np.outer(rows, cols) / 30
    w = np.abs(np.subtract.outer(np.arange(3), np.arange(3))) / 2
    assert float((w * expected).sum()) == pytest.approx(11.8, abs=1e-12)
    assert kappa_from_matrix(m, "linear").value == pytest.approx(1 - 4 / 11.8, abs=1e-15)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
@pytest.mark.parametrize("seed", range(4))
def test_cohen_kappa_equals_scikit_learn(weights: str, seed: int) -> None:
    """Erosion-like scores 0-5 of two raters: equal to sklearn.metrics.cohen_kappa_score."""
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, 200)
    b = np.clip(a + rng.integers(-1, 2, 200) * (rng.random(200) < 0.4), 0, 5)
    ours = cohen_kappa(a.tolist(), b.tolist(), weights, categories=range(6))
    assert ours.value == pytest.approx(cohen_kappa_score(a, b, weights=weights, labels=list(range(6))), abs=1e-12)


def test_weights_use_the_scale_not_only_the_scores_seen() -> None:
    """JSN 0-4 with only 0, 1 and 4 used: linear weights over the 0-4 scale differ from weights over
    the three observed values; both equal sklearn given the same labels."""
    from sklearn.metrics import cohen_kappa_score

    a = [0, 0, 1, 1, 4, 4, 0, 1]
    b = [0, 1, 1, 4, 4, 1, 0, 0]
    full = cohen_kappa(a, b, "linear", categories=range(5))
    seen = cohen_kappa(a, b, "linear")
    assert full.value == pytest.approx(cohen_kappa_score(a, b, weights="linear", labels=[0, 1, 2, 3, 4]), abs=1e-12)
    assert seen.value == pytest.approx(cohen_kappa_score(a, b, weights="linear"), abs=1e-12)
    assert full.value != pytest.approx(seen.value)


@pytest.mark.parametrize("raters", [3, 5])
def test_fleiss_kappa_equals_statsmodels(raters: int) -> None:
    """TI-RADS categories 1-5 from several raters: statsmodels.stats.inter_rater.fleiss_kappa."""
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss

    rng = np.random.default_rng(raters)
    truth = rng.integers(1, 6, 80)
    ratings = [[int(np.clip(t + rng.integers(-1, 2) * (rng.random() < 0.3), 1, 5)) for _ in range(raters)]
               for t in truth]
    table, _ = fleiss_table(ratings, categories=range(1, 6))
    assert fleiss_kappa(ratings, range(1, 6)).value == pytest.approx(sm_fleiss(table, method="fleiss"), abs=1e-12)


def test_fleiss_kappa_with_two_raters_is_scotts_pi_not_cohens_kappa() -> None:
    """SPEC Decisions: with two raters Fleiss' kappa is Scott's pi (pooled marginals). Hand example:
    a = [1,1,1,1,2,2,2,2,2,2], b = [1,1,2,2,2,2,2,2,2,1]: agreement 0.7; pooled p(1) = 7/20,
    p(2) = 13/20, chance 0.545, pi = (0.7 - 0.545)/(1 - 0.545)."""
    a = [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    b = [1, 1, 2, 2, 2, 2, 2, 2, 2, 1]
    expected = (0.7 - 0.545) / (1 - 0.545)
    assert scott_pi(a, b).value == pytest.approx(expected, abs=1e-12)
    assert fleiss_kappa(list(zip(a, b))).value == pytest.approx(expected, abs=1e-12)
    cohen = cohen_kappa(a, b).value
    assert not math.isclose(cohen, expected, abs_tol=1e-6)


def test_pearson_equals_scipy() -> None:
    from scipy.stats import pearsonr

    rng = np.random.default_rng(2)
    x = rng.normal(50, 10, 40)
    y = 0.8 * x + rng.normal(0, 5, 40)
    assert pearson(x.tolist(), y.tolist()).value == pytest.approx(pearsonr(x, y)[0], abs=1e-12)


def test_undefined_statistics_say_why() -> None:
    """One category only: chance agreement 1, kappa undefined (NaN with the reason), not 0 or 1."""
    k = cohen_kappa([2, 2, 2], [2, 2, 2])
    assert math.isnan(k.value) and "chance agreement is 1" in k.reason and k.to_dict()["value"] is None
    assert math.isnan(kappa_from_matrix([[0, 0], [0, 0]]).value)
    assert math.isnan(fleiss_kappa([[1, 1, 1], [1, 1, 1]]).value)
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).value)
    assert math.isnan(pearson([1.0], [2.0]).value)


def test_invalid_agreement_inputs_are_refused() -> None:
    with pytest.raises(InputError, match="same subjects"):
        confusion_matrix([1, 2], [1])
    with pytest.raises(InputError, match="not among the categories"):
        cohen_kappa([1, 7], [1, 2], categories=range(1, 6))
    with pytest.raises(InputError, match="weights"):
        kappa_from_matrix([[1, 0], [0, 1]], "cubic")
    with pytest.raises(InputError, match="square"):
        kappa_from_matrix([[1, 0, 0], [0, 1, 0]])
    with pytest.raises(InputError, match="same number"):
        fleiss_kappa([[1, 2], [1, 2, 3]])
    with pytest.raises(InputError, match="same number"):
        fleiss_kappa_from_table([[2, 0], [1, 2]])
    with pytest.raises(InputError, match="no ratings"):
        confusion_matrix([], [])


def test_agreement_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``mmanno qc agreement``: two raters' erosion scores from a spreadsheet export."""
    import json

    from MultiModalAnnotationLib.cli import main

    table = tmp_path / "scores.csv"
    table.write_text("joint,reader_a,reader_b\nMCP1,0,0\nMCP2,2,3\nMCP3,5,5\nPIP1,1,\nPIP2,3,2\nPIP3,0,1\n",
                     encoding="utf-8")
    out = tmp_path / "k.json"
    assert main(["qc", "agreement", str(table), "--raters", "reader_a,reader_b", "--weights", "quadratic",
                 "--scale", "0-5", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["subjects"] == 5 and data["left_out"] == 1
    from sklearn.metrics import cohen_kappa_score

    a, b = [0, 2, 5, 3, 0], [0, 3, 5, 2, 1]
    assert data["weighted_kappa"]["value"] == pytest.approx(
        cohen_kappa_score(a, b, weights="quadratic", labels=list(range(6))), abs=1e-12)
    capsys.readouterr()
    assert main(["qc", "agreement", str(table), "--raters", "reader_a,nobody"]) == 2
    assert "column(s) nobody not in the header" in capsys.readouterr().err
