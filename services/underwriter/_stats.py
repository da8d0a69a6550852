"""Estimators for the Underwriter: agreement, bootstrap CIs, corrections, tests.

Every estimator returns `nan` (never raises) when it is undefined on the data
it was given: empty input, or a denominator of zero such as Cohen's kappa when
both raters used one category only. Callers turn `nan` into `null` in JSON.
Invalid *parameters* (a confidence outside (0, 1), a Youden index <= 0) raise
`ValueError`.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _scipy_stats

DEFAULT_RESAMPLES = 2000
"""Bootstrap resamples used unless a caller asks otherwise (the issue asks >= 1000)."""

_MIN_RESAMPLES = 1000
_CHUNK_RESAMPLES = 250
_SEVERITY_LEVELS = 5

SumStat = Callable[[np.ndarray], np.ndarray]
"""Maps summed unit features, shape (m, d), to one statistic per row, shape (m,)."""


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile bootstrap interval.

    `low`/`high` are `nan` when the estimate is undefined; when every resample
    gives the same value (one cluster, or all values equal) the interval has
    zero width.
    """

    value: float
    low: float
    high: float
    n: int


def cluster_bootstrap(
    features: np.ndarray,
    clusters: Sequence[object] | None,
    statistic: SumStat,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Seeded percentile bootstrap over whole clusters for a sum statistic.

    Estimator: the nonparametric cluster bootstrap (Davison & Hinkley 1997,
    "Bootstrap Methods and their Application", section 3.8): clusters are drawn
    with replacement, all units of a drawn cluster come along, and the CI is
    the percentile interval (Efron & Tibshirani 1993, ch. 13) of the statistic
    over the resamples. Units that share a cluster (the same harmful behaviour
    under several jailbreak wrappers) are dependent, so resampling units one by
    one would make the interval too narrow.

    The statistic sees only feature sums, which makes resampling a matrix
    product: a resample's sums are `counts @ cluster_sums`.

    Args:
        features: shape (n,) or (n, d), one row per unit.
        clusters: cluster id per unit; None puts each unit in its own cluster.
        statistic: maps summed features (m, d) to (m,) values; `nan` allowed.
        n_resamples: at least 1000.
        seed: seed of the resampling generator.
        confidence: two-sided level in (0, 1).

    Returns:
        The statistic on the full sample and its percentile interval;
        resamples where the statistic is `nan` are left out.

    Raises:
        ValueError: n_resamples < 1000, confidence outside (0, 1), or
            clusters of the wrong length.
    """
    if n_resamples < _MIN_RESAMPLES:
        raise ValueError(f"n_resamples={n_resamples} is below {_MIN_RESAMPLES}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} is not inside (0, 1)")
    x = np.asarray(features, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)

    # Sum the features of each cluster once; resampling then works on clusters.
    sums = _cluster_sums(x, clusters)
    point = float(statistic(x.sum(axis=0)[None, :])[0])
    rng = np.random.default_rng(seed)
    values = np.concatenate(list(_resampled_stats(sums, statistic, n_resamples, rng)))
    values = values[np.isfinite(values)]
    if not math.isfinite(point) or values.size == 0:
        return Estimate(point, math.nan, math.nan, n)

    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return Estimate(point, float(low), float(high), n)


def bootstrap_mean(
    values: Sequence[float],
    clusters: Sequence[object] | None = None,
    **kwargs: object,
) -> Estimate:
    """Mean of `values` with a cluster percentile bootstrap CI.

    The mean of a resample is the ratio estimator sum(x) / count, so clusters
    of unequal size are weighted by their size, as in the full-sample mean.
    Keyword arguments go to `cluster_bootstrap`.

    Known limitation: for a rate with few events (n * p below about 5) the
    percentile interval undercovers (about 86% instead of 95% at 25 items and
    p = 0.1 in the known-answer tests), because the resampled rate cannot go
    below zero events. Unclustered binary rates use `wilson_interval`
    instead; clustered ones still have this limitation.
    """
    x = np.asarray(values, dtype=float)
    feats = np.column_stack([x, np.ones_like(x)]) if x.size else np.zeros((0, 2))
    return cluster_bootstrap(feats, clusters, _ratio, **kwargs)


def wilson_interval(outcomes: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Share of 1s among independent 0/1 `outcomes`, with the Wilson score CI.

    Estimator: the score interval of Wilson (1927), "Probable inference, the
    law of succession, and statistical inference", JASA 22; recommended over
    the Wald and percentile intervals for small n or rare events by Brown,
    Cai and DasGupta (2001), "Interval estimation for a binomial
    proportion", Statistical Science 16. Unlike a bootstrap it keeps near-
    nominal coverage with a handful of events, and it is never degenerate at
    0 or n events.

    Raises:
        ValueError: `confidence` is outside (0, 1) or an outcome is not 0 or 1.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r}: must be in (0, 1)")
    x = np.asarray(outcomes, dtype=float)
    if not np.isin(x, (0.0, 1.0)).all():
        raise ValueError("outcomes must each be 0 or 1")
    n = int(x.size)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    p = float(x.mean())
    z = float(_scipy_stats.norm.ppf(0.5 + confidence / 2.0))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def cohen_kappa_quadratic(
    a: Sequence[int], b: Sequence[int], n_levels: int = _SEVERITY_LEVELS
) -> float:
    """Cohen's kappa with quadratic weights for two raters on 0..n_levels-1.

    Estimator: weighted kappa (Cohen 1968, Psychological Bulletin 70(4)),
    kappa_w = 1 - sum(w * O) / sum(w * E) with disagreement weights
    w_ij = (i - j)^2 / (k - 1)^2, observed proportions O and chance
    proportions E = outer(row marginals, column marginals). With two levels it
    equals the unweighted kappa (Cohen 1960).

    Returns:
        kappa, or nan when there are no pairs or the chance disagreement is
        zero (both raters used one and the same level throughout).
    """
    counts = _confusion(np.asarray(a, dtype=int), np.asarray(b, dtype=int), n_levels)
    return float(_kappa_from_counts(counts[None, :], n_levels)[0])


def krippendorff_alpha(
    ratings: np.ndarray, n_levels: int = _SEVERITY_LEVELS, metric: str = "ordinal"
) -> float:
    """Krippendorff's alpha for ratings on 0..n_levels-1, missing values allowed.

    Estimator: alpha = 1 - D_o / D_e from the coincidence matrix (Krippendorff
    2011, "Computing Krippendorff's Alpha-Reliability", Annenberg working
    paper; Hayes & Krippendorff 2007). Units with fewer than two values are
    not pairable and are dropped. The Underwriter reports the **ordinal**
    metric, delta^2(c, k) = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2, because the
    0-4 severity scale is ordered but its steps are not known to be equal;
    "interval" ((c - k)^2) and "nominal" are available too.

    Args:
        ratings: shape (units, raters); `nan` marks a missing rating.
        n_levels: number of ordered levels.
        metric: "ordinal", "interval" or "nominal".

    Returns:
        alpha, or nan when fewer than two pairable values exist or the
        expected disagreement is zero (every value identical).

    Raises:
        ValueError: unknown metric.
    """
    _check_metric(metric)
    unit_coincidences = _unit_coincidences(np.asarray(ratings, dtype=float), n_levels)
    total = unit_coincidences.sum(axis=0)[None, :]
    return float(_alpha_from_coincidences(total, n_levels, metric)[0])


def kappa_with_ci(
    a: Sequence[int],
    b: Sequence[int],
    clusters: Sequence[object] | None = None,
    n_levels: int = _SEVERITY_LEVELS,
    **kwargs: object,
) -> Estimate:
    """`cohen_kappa_quadratic` with a cluster percentile bootstrap CI."""
    a_arr, b_arr = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    onehot = np.zeros((a_arr.size, n_levels * n_levels))
    onehot[np.arange(a_arr.size), a_arr * n_levels + b_arr] = 1.0
    return cluster_bootstrap(
        onehot, clusters, lambda s: _kappa_from_counts(s, n_levels), **kwargs
    )


def alpha_with_ci(
    ratings: np.ndarray,
    clusters: Sequence[object] | None = None,
    n_levels: int = _SEVERITY_LEVELS,
    metric: str = "ordinal",
    **kwargs: object,
) -> Estimate:
    """`krippendorff_alpha` with a cluster percentile bootstrap CI over units."""
    _check_metric(metric)
    feats = _unit_coincidences(np.asarray(ratings, dtype=float), n_levels)
    return cluster_bootstrap(
        feats,
        clusters,
        lambda s: _alpha_from_coincidences(s, n_levels, metric),
        **kwargs,
    )


def raw_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of units where both raters gave the same level (nan if empty)."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    return float(np.mean(a_arr == b_arr)) if a_arr.size else math.nan


def prevalence(a: Sequence[int], b: Sequence[int], threshold: int = 2) -> float:
    """Share of all ratings at or above `threshold` (the positive class).

    Reported beside kappa because kappa is depressed when the positive class
    is rare or nearly universal (Feinstein & Cicchetti 1990, "High agreement
    but low kappa", J Clin Epidemiol 43(6)). Pooled over both raters.
    """
    both = np.concatenate([np.asarray(a), np.asarray(b)])
    return float(np.mean(both >= threshold)) if both.size else math.nan


def rogan_gladen(apparent: float, sensitivity: float, specificity: float) -> float:
    """Prevalence corrected for an imperfect detector, clipped to [0, 1].

    Estimator: Rogan & Gladen (1978), "Estimating prevalence from the results
    of a screening test", Am J Epidemiol 107(1):
    p = (apparent + specificity - 1) / (sensitivity + specificity - 1).

    Raises:
        ValueError: sensitivity or specificity outside [0, 1], or
            sensitivity + specificity <= 1 (the detector is no better than
            chance, so the rate cannot be corrected).
    """
    for name, value in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} is not inside [0, 1]")
    youden = sensitivity + specificity - 1.0
    if youden <= 0.0:
        raise ValueError(
            f"sensitivity + specificity = {sensitivity + specificity} must exceed 1"
        )
    if math.isnan(apparent):
        return math.nan
    return min(1.0, max(0.0, (apparent + specificity - 1.0) / youden))


def rogan_gladen_with_ci(
    values: Sequence[float],
    clusters: Sequence[object] | None,
    sensitivity: float,
    specificity: float,
    *,
    n_positive: int | None = None,
    n_negative: int | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """The Rogan-Gladen corrected rate of 0/1 `values` with a bootstrap CI.

    Estimator: `rogan_gladen` applied to the apparent rate mean(values).
    The interval is the percentile interval of the corrected rate over the
    same cluster resamples that `bootstrap_mean` draws for the raw rate (same
    seed, same clusters), so raw and corrected intervals are comparable.
    When the detector's sensitivity and specificity were estimated from
    `n_positive` and `n_negative` labelled samples, each resample also draws
    them from their binomial sampling distributions (a parametric
    bootstrap), so the interval includes the calibration's own error; Lang &
    Reiczigel (2014), "Confidence limits for prevalence of disease adjusted
    for estimated sensitivity and specificity", Prev Vet Med 113(1), show
    that leaving it out makes the interval too narrow. A resample whose
    drawn sensitivity + specificity is at most 1 is left out.

    Args:
        values: 1 where the detector flagged the unit, 0 where it did not.
        clusters: cluster id per unit, as for `bootstrap_mean`.
        sensitivity: detector sensitivity in [0, 1].
        specificity: detector specificity in [0, 1].
        n_positive: labelled positives behind `sensitivity`; None treats
            it as known exactly.
        n_negative: labelled negatives behind `specificity`; likewise.
        n_resamples: at least 1000.
        seed: seed of the resampling generator.
        confidence: two-sided level in (0, 1).

    Raises:
        ValueError: as `rogan_gladen` and `cluster_bootstrap`, or a
            non-positive sample count.
    """
    for name, count in (("n_positive", n_positive), ("n_negative", n_negative)):
        if count is not None and count < 1:
            raise ValueError(f"{name}={count} must be at least 1 (or None)")
    rogan_gladen(0.5, sensitivity, specificity)  # validates the pair
    raw = bootstrap_mean(
        values, clusters, n_resamples=n_resamples, seed=seed, confidence=confidence
    )
    if raw.n == 0 or math.isnan(raw.value):
        return Estimate(math.nan, math.nan, math.nan, raw.n)
    point = rogan_gladen(raw.value, sensitivity, specificity)

    # The raw rate's resamples, drawn exactly as bootstrap_mean draws them.
    x = np.asarray(values, dtype=float)
    sums = _cluster_sums(np.column_stack([x, np.ones_like(x)]), clusters)
    rng = np.random.default_rng(seed)
    apparent = np.concatenate(list(_resampled_stats(sums, _ratio, n_resamples, rng)))
    # The calibration's draws come from their own stream, after the above.
    cal_rng = np.random.default_rng([seed, 1])
    sens = _binomial_share(cal_rng, sensitivity, n_positive, apparent.size)
    spec = _binomial_share(cal_rng, specificity, n_negative, apparent.size)
    youden = sens + spec - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        corrected = np.clip((apparent + spec - 1.0) / youden, 0.0, 1.0)
    corrected = corrected[(youden > 0) & np.isfinite(corrected)]
    if corrected.size == 0:
        return Estimate(point, math.nan, math.nan, raw.n)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(corrected, [tail, 100.0 - tail])
    return Estimate(point, float(low), float(high), raw.n)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    Estimator: McNemar (1947), Psychometrika 12(2), exact form: under H0 the
    b discordant pairs of one kind are Binomial(b + c, 1/2);
    p = min(1, 2 * P(X <= min(b, c))). No discordant pairs gives p = 1.

    Raises:
        ValueError: a negative count.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * _scipy_stats.binom.cdf(min(b, c), b + c, 0.5)))


def paired_bootstrap_difference(
    before: Sequence[float],
    after: Sequence[float],
    clusters: Sequence[object] | None = None,
    **kwargs: object,
) -> Estimate:
    """mean(before) - mean(after) over paired units, clusters resampled together.

    Estimator: paired (cluster) percentile bootstrap (Efron & Tibshirani 1993,
    ch. 13): a resample draws clusters and keeps each unit's pair intact, so
    the between-unit variation that both arms share cancels.

    Raises:
        ValueError: the two sequences differ in length.
    """
    x, y = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired arms differ in length: {x.size} != {y.size}")
    return bootstrap_mean(x - y, clusters, **kwargs)


# ---------------------------------------------------------------------------


def _ratio(sums: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            sums[:, 1] > 0, sums[:, 0] / np.maximum(sums[:, 1], 1e-300), np.nan
        )


def _binomial_share(
    rng: np.random.Generator, p: float, n: int | None, size: int
) -> np.ndarray:
    """`size` draws of Binomial(n, p) / n; the constant p when n is None."""
    if n is None:
        return np.full(size, float(p))
    return rng.binomial(n, p, size=size) / n


def _cluster_sums(x: np.ndarray, clusters: Sequence[object] | None) -> np.ndarray:
    if clusters is None:
        return x
    if len(clusters) != x.shape[0]:
        raise ValueError(f"clusters has {len(clusters)} ids for {x.shape[0]} units")
    _, inverse = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    sums = np.zeros((inverse.max() + 1, x.shape[1]))
    np.add.at(sums, inverse, x)
    return sums


def _resampled_stats(
    sums: np.ndarray, statistic: SumStat, n_resamples: int, rng: np.random.Generator
):
    n_clusters = sums.shape[0]
    done = 0
    while done < n_resamples:
        m = min(_CHUNK_RESAMPLES, n_resamples - done)
        draws = rng.integers(0, n_clusters, size=(m, n_clusters))
        offsets = (np.arange(m) * n_clusters)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=m * n_clusters)
        yield statistic(counts.reshape(m, n_clusters).astype(float) @ sums)
        done += m


def _confusion(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    if a.shape != b.shape:
        raise ValueError(f"raters differ in length: {a.size} != {b.size}")
    return np.bincount(a * k + b, minlength=k * k).astype(float)


def _kappa_from_counts(counts: np.ndarray, k: int) -> np.ndarray:
    cells = counts.reshape(-1, k, k)
    total = cells.sum(axis=(1, 2))
    levels = np.arange(k)
    weights = (levels[:, None] - levels[None, :]) ** 2 / max(k - 1, 1) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = cells / total[:, None, None]
        expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None, :]
        d_obs = (weights * observed).sum(axis=(1, 2))
        d_exp = (weights * expected).sum(axis=(1, 2))
        kappa = 1.0 - d_obs / d_exp
    return np.where((total > 0) & (d_exp > 1e-12), kappa, np.nan)


def _check_metric(metric: str) -> None:
    if metric not in {"ordinal", "interval", "nominal"}:
        raise ValueError(f"metric={metric!r}; use 'ordinal', 'interval' or 'nominal'")


def _unit_coincidences(ratings: np.ndarray, k: int) -> np.ndarray:
    """Each unit's contribution to the coincidence matrix, flattened (units, k*k)."""
    if ratings.ndim != 2:
        raise ValueError(f"ratings must be 2-D (units, raters), got {ratings.shape}")
    present = ~np.isnan(ratings)
    counts = np.zeros((ratings.shape[0], k))
    for rater in range(ratings.shape[1]):
        rows = np.nonzero(present[:, rater])[0]
        np.add.at(counts, (rows, ratings[rows, rater].astype(int)), 1.0)

    # A unit with m values adds n_uc * n_uk / (m - 1) (minus self-pairs) to o_ck.
    m = counts.sum(axis=1)
    pair = counts[:, :, None] * counts[:, None, :]
    pair[:, np.arange(k), np.arange(k)] -= counts
    with np.errstate(divide="ignore", invalid="ignore"):
        pair = np.where((m >= 2)[:, None, None], pair / (m - 1)[:, None, None], 0.0)
    return pair.reshape(ratings.shape[0], k * k)


def _alpha_from_coincidences(flat: np.ndarray, k: int, metric: str) -> np.ndarray:
    o = flat.reshape(-1, k, k)
    n_c = o.sum(axis=2)
    n = n_c.sum(axis=1)
    levels = np.arange(k)
    if metric == "nominal":
        delta = np.broadcast_to(
            (levels[:, None] != levels[None, :]).astype(float), o.shape
        )
    elif metric == "interval":
        delta = np.broadcast_to(
            ((levels[:, None] - levels[None, :]) ** 2).astype(float), o.shape
        )
    else:
        cum = np.cumsum(n_c, axis=1)
        # sum_{g=c..k} n_g for c <= k, written symmetrically with |.|.
        lo, hi = np.minimum.outer(levels, levels), np.maximum.outer(levels, levels)
        span = cum[:, hi] - cum[:, lo] + n_c[:, lo]
        delta = (span - (n_c[:, :, None] + n_c[:, None, :]) / 2.0) ** 2

    d_obs = (o * delta).sum(axis=(1, 2))
    d_exp = (n_c[:, :, None] * n_c[:, None, :] * delta).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 - (n - 1.0) * d_obs / d_exp
    return np.where((n >= 2) & (d_exp > 1e-12), alpha, np.nan)
