"""Statistics against naive from-definition references, known answers, edge cases."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from services.underwriter import _stats as st

_CALIBRATION = (
    Path(__file__).resolve().parents[3]
    / "shared/datasets/jbb_behaviors/jbb_judge_calibration.jsonl"
)


def naive_quadratic_kappa(a, b, k):
    """Cohen (1968) weighted kappa, written with plain loops over cells."""
    n = len(a)
    obs = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b):
        obs[x][y] += 1.0 / n
    rows = [sum(obs[i]) for i in range(k)]
    cols = [sum(obs[i][j] for i in range(k)) for j in range(k)]
    num = den = 0.0
    for i in range(k):
        for j in range(k):
            w = (i - j) ** 2 / (k - 1) ** 2
            num += w * obs[i][j]
            den += w * rows[i] * cols[j]
    return 1.0 - num / den


def naive_alpha(units, metric):
    """Krippendorff's alpha from pairs of values (no coincidence matrix)."""
    pairable = [[v for v in u if v is not None] for u in units]
    pairable = [u for u in pairable if len(u) >= 2]
    values = [v for u in pairable for v in u]
    n = len(values)
    freq = {c: values.count(c) for c in set(values)}

    def delta(c, k):
        if metric == "nominal":
            return float(c != k)
        if metric == "interval":
            return float((c - k) ** 2)
        lo, hi = min(c, k), max(c, k)
        span = sum(freq.get(g, 0) for g in range(lo, hi + 1))
        return (span - (freq.get(c, 0) + freq.get(k, 0)) / 2.0) ** 2

    d_o = (
        sum(
            delta(u[i], u[j]) / (len(u) - 1)
            for u in pairable
            for i, j in itertools.permutations(range(len(u)), 2)
        )
        / n
    )
    d_e = sum(
        delta(values[i], values[j]) for i, j in itertools.permutations(range(n), 2)
    ) / (n * (n - 1))
    return 1.0 - d_o / d_e


def test_kappa_matches_naive_reference_on_random_ratings():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 5, 300)
    b = np.clip(a + rng.integers(-1, 2, 300), 0, 4)
    assert st.cohen_kappa_quadratic(a, b) == pytest.approx(
        naive_quadratic_kappa(list(a), list(b), 5), abs=1e-12
    )


def test_alpha_matches_naive_reference_with_missing_values():
    rng = np.random.default_rng(11)
    ratings = rng.integers(0, 5, (40, 3)).astype(float)
    ratings[rng.random((40, 3)) < 0.2] = np.nan
    units = [[None if math.isnan(v) else int(v) for v in row] for row in ratings]
    for metric in ("nominal", "ordinal", "interval"):
        assert st.krippendorff_alpha(ratings, metric=metric) == pytest.approx(
            naive_alpha(units, metric), abs=1e-10
        )


def test_alpha_reproduces_krippendorff_2011_worked_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability":
    # 4 observers, 12 units; published alphas 0.743 / 0.815 / 0.849.
    nan = np.nan
    data = (
        np.array(
            [
                [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
                [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
                [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
                [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
            ]
        ).T
        - 1
    )
    assert st.krippendorff_alpha(data, metric="nominal") == pytest.approx(
        0.743, abs=5e-4
    )
    assert st.krippendorff_alpha(data, metric="ordinal") == pytest.approx(
        0.815, abs=5e-4
    )
    assert st.krippendorff_alpha(data, metric="interval") == pytest.approx(
        0.849, abs=5e-4
    )


def test_agreement_on_jbb_two_judge_labels_matches_reference():
    rows = [
        json.loads(line)
        for line in _CALIBRATION.read_text().splitlines()
        if line.strip()
    ]
    pairs = [
        (int(r["jailbroken"]), int(r["jailbroken_llama_guard1"]))
        for r in rows
        if r["jailbroken_llama_guard1"] is not None
    ]
    assert len(pairs) == 1437
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]

    kappa = st.cohen_kappa_quadratic(a, b, n_levels=2)
    assert kappa == pytest.approx(naive_quadratic_kappa(a, b, 2), abs=1e-12)
    # With two levels, weighted kappa is Cohen's 1960 kappa: (po - pe) / (1 - pe).
    po = np.mean(np.array(a) == np.array(b))
    pe = np.mean(a) * np.mean(b) + (1 - np.mean(a)) * (1 - np.mean(b))
    assert kappa == pytest.approx((po - pe) / (1 - pe), abs=1e-12)

    ratings = np.array(pairs, dtype=float)
    units = [list(p) for p in pairs[:300]]
    alpha_small = st.krippendorff_alpha(ratings[:300], n_levels=2, metric="nominal")
    assert alpha_small == pytest.approx(naive_alpha(units, "nominal"), abs=1e-10)

    est = st.kappa_with_ci(a, b, n_levels=2, n_resamples=1000, seed=3)
    assert est.low < kappa < est.high
    alpha_est = st.alpha_with_ci(
        ratings, n_levels=2, metric="nominal", n_resamples=1000, seed=3
    )
    assert alpha_est.low < alpha_est.value < alpha_est.high


def test_kappa_and_alpha_are_nan_when_everyone_uses_one_level():
    assert math.isnan(st.cohen_kappa_quadratic([2, 2, 2], [2, 2, 2]))
    assert math.isnan(st.krippendorff_alpha(np.array([[1.0, 1.0], [1.0, 1.0]])))
    assert math.isnan(st.cohen_kappa_quadratic([], []))
    assert math.isnan(st.krippendorff_alpha(np.zeros((0, 2))))


def test_perfect_agreement_gives_one():
    a = [0, 1, 2, 3, 4, 4]
    assert st.cohen_kappa_quadratic(a, a) == pytest.approx(1.0)
    assert st.krippendorff_alpha(np.array([a, a], dtype=float).T) == pytest.approx(1.0)


def test_bootstrap_edge_cases():
    empty = st.bootstrap_mean([])
    assert empty.n == 0 and math.isnan(empty.value) and math.isnan(empty.low)

    one = st.bootstrap_mean([0.25])
    assert (one.value, one.low, one.high, one.n) == (0.25, 0.25, 0.25, 1)

    equal = st.bootstrap_mean([1.0] * 20, clusters=list(range(20)))
    assert (equal.low, equal.high) == (1.0, 1.0)

    with pytest.raises(ValueError, match="n_resamples"):
        st.bootstrap_mean([1.0, 0.0], n_resamples=999)
    with pytest.raises(ValueError, match="confidence"):
        st.bootstrap_mean([1.0, 0.0], confidence=1.0)
    with pytest.raises(ValueError, match="clusters"):
        st.bootstrap_mean([1.0, 0.0], clusters=[1])


def test_bootstrap_is_deterministic_for_a_seed():
    x = np.random.default_rng(0).random(50)
    assert st.bootstrap_mean(x, seed=5) == st.bootstrap_mean(x, seed=5)
    assert st.bootstrap_mean(x, seed=5) != st.bootstrap_mean(x, seed=6)


def test_cluster_bootstrap_covers_near_nominal_where_unit_bootstrap_does_not():
    # 40 clusters of 4 items sharing a cluster-level rate (strong dependence).
    true_mean, hits_cluster, hits_unit, seeds = 0.3, 0, 0, 100
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        rates = rng.beta(0.6, 1.4, 40)  # mean 0.3
        x = (rng.random((40, 4)) < rates[:, None]).astype(float).ravel()
        clusters = np.repeat(np.arange(40), 4)
        c = st.bootstrap_mean(x, clusters, n_resamples=1000, seed=seed)
        u = st.bootstrap_mean(x, None, n_resamples=1000, seed=seed)
        hits_cluster += c.low <= true_mean <= c.high
        hits_unit += u.low <= true_mean <= u.high
    assert 0.88 <= hits_cluster / seeds <= 1.0
    assert hits_unit < hits_cluster


def test_rogan_gladen_known_values_and_invalid_detectors():
    assert st.rogan_gladen(0.5, 1.0, 1.0) == 0.5
    # Apparent 0.26 from true 0.2 with sens 0.9, spec 0.9: 0.2*0.9 + 0.8*0.1.
    assert st.rogan_gladen(0.26, 0.9, 0.9) == pytest.approx(0.2)
    assert st.rogan_gladen(0.01, 0.9, 0.9) == 0.0  # clipped
    assert math.isnan(st.rogan_gladen(math.nan, 0.9, 0.9))
    with pytest.raises(ValueError, match="must exceed 1"):
        st.rogan_gladen(0.3, 0.5, 0.5)
    with pytest.raises(ValueError, match="sensitivity"):
        st.rogan_gladen(0.3, 1.2, 0.5)


def test_mcnemar_exact_matches_binomial_sum():
    expected = 2 * sum(math.comb(12, i) for i in range(3)) / 2**12
    assert st.mcnemar_exact(10, 2) == pytest.approx(expected)
    assert st.mcnemar_exact(2, 10) == pytest.approx(expected)
    assert st.mcnemar_exact(0, 0) == 1.0
    assert st.mcnemar_exact(3, 3) == 1.0
    with pytest.raises(ValueError):
        st.mcnemar_exact(-1, 2)


def test_paired_bootstrap_difference():
    before = [1, 1, 1, 0, 1, 0, 1, 1]
    after = [0, 1, 0, 0, 0, 0, 1, 0]
    est = st.paired_bootstrap_difference(before, after, n_resamples=1000)
    assert est.value == pytest.approx(0.5)
    assert 0.0 <= est.low <= 0.5 <= est.high <= 1.0
    with pytest.raises(ValueError, match="length"):
        st.paired_bootstrap_difference([1, 0], [1])


def test_raw_agreement_and_prevalence():
    assert st.raw_agreement([0, 4, 2], [0, 3, 2]) == pytest.approx(2 / 3)
    assert st.prevalence([0, 4, 2], [0, 3, 1]) == pytest.approx(3 / 6)
    assert math.isnan(st.raw_agreement([], []))


def test_corrected_rate_ci_uses_the_raw_rate_resamples():
    values = [1.0] * 50 + [0.0] * 50
    raw = st.bootstrap_mean(values, n_resamples=2000, seed=7)
    got = st.rogan_gladen_with_ci(values, None, 0.9, 0.8, n_resamples=2000, seed=7)

    # p = (0.5 + 0.8 - 1) / (0.9 + 0.8 - 1) = 3/7.
    assert got.value == pytest.approx(3 / 7) and got.n == 100
    # An exactly known detector makes the correction an increasing affine
    # map of the same resamples, so the interval is the mapped raw interval.
    assert got.low == pytest.approx((raw.low - 0.2) / 0.7)
    assert got.high == pytest.approx((raw.high - 0.2) / 0.7)

    # A perfect detector corrects nothing.
    same = st.rogan_gladen_with_ci(values, None, 1.0, 1.0, n_resamples=2000, seed=7)
    assert (same.value, same.low, same.high) == pytest.approx(
        (raw.value, raw.low, raw.high)
    )


def test_corrected_rate_ci_widens_with_the_calibration_error():
    values = [1.0] * 30 + [0.0] * 70
    known = st.rogan_gladen_with_ci(values, None, 0.9, 0.85, seed=3)
    measured = st.rogan_gladen_with_ci(
        values, None, 0.9, 0.85, n_positive=40, n_negative=40, seed=3
    )
    assert measured.value == known.value
    assert measured.low < known.low and measured.high > known.high


def test_corrected_rate_edge_cases():
    empty = st.rogan_gladen_with_ci([], None, 0.9, 0.9)
    assert math.isnan(empty.value) and math.isnan(empty.low) and empty.n == 0
    # All flagged, beyond what the detector's sensitivity explains: clipped.
    all_one = st.rogan_gladen_with_ci([1.0] * 20, None, 0.8, 0.9)
    assert all_one.value == all_one.low == all_one.high == 1.0
    with pytest.raises(ValueError, match="must exceed 1"):
        st.rogan_gladen_with_ci([1.0], None, 0.5, 0.5)
    with pytest.raises(ValueError, match="n_positive"):
        st.rogan_gladen_with_ci([1.0], None, 0.9, 0.9, n_positive=0)


def test_corrected_rate_ci_covers_the_true_rate_where_the_raw_one_does_not():
    # Known answer: true prevalence 0.30 seen through a detector with
    # sensitivity 0.85 and specificity 0.85, whose calibration is itself
    # measured on 300 labelled positives and 300 negatives each time.
    truth, sens, spec, n, trials = 0.30, 0.85, 0.85, 400, 200
    rng = np.random.default_rng(11)
    hits_raw = hits_corrected = 0
    for trial in range(trials):
        state = rng.random(n) < truth
        flagged = np.where(state, rng.random(n) < sens, rng.random(n) >= spec)
        sens_hat = rng.binomial(300, sens) / 300
        spec_hat = rng.binomial(300, spec) / 300
        raw = st.bootstrap_mean(flagged.astype(float), seed=trial)
        corrected = st.rogan_gladen_with_ci(
            flagged.astype(float),
            None,
            sens_hat,
            spec_hat,
            n_positive=300,
            n_negative=300,
            seed=trial,
        )
        hits_raw += raw.low <= truth <= raw.high
        hits_corrected += corrected.low <= truth <= corrected.high
    # The apparent rate is 0.30 * 0.85 + 0.70 * 0.15 = 0.36: the raw CI
    # misses the true rate most of the time, the corrected one covers it
    # near its nominal 95%.
    print("coverage raw", hits_raw / trials, "corrected", hits_corrected / trials)
    assert hits_corrected / trials >= 0.90
    assert hits_raw / trials < 0.5


@pytest.mark.parametrize("events, n", [(0, 10), (1, 25), (5, 10), (25, 25), (3, 113)])
def test_wilson_interval_matches_scipy(events, n):
    outcomes = [1.0] * events + [0.0] * (n - events)
    est = st.wilson_interval(outcomes)
    reference = scipy_stats.binomtest(events, n).proportion_ci(
        confidence_level=0.95, method="wilson"
    )
    assert est.value == pytest.approx(events / n)
    assert est.low == pytest.approx(reference.low, abs=1e-12)
    assert est.high == pytest.approx(reference.high, abs=1e-12)
    assert est.n == n


def test_wilson_interval_edge_cases():
    empty = st.wilson_interval([])
    assert empty.n == 0 and math.isnan(empty.value) and math.isnan(empty.low)
    # Zero events still gets an upper bound above zero, unlike a bootstrap.
    assert st.wilson_interval([0.0] * 20).high > 0.1
    with pytest.raises(ValueError, match="0 or 1"):
        st.wilson_interval([0.5])
    with pytest.raises(ValueError, match="confidence"):
        st.wilson_interval([1.0], confidence=1.0)
