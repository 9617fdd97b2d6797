"""Drift detection on the device: is this user's signal still what the bridge was trained on?

The bundle's ``reference.npz`` (written at export by :mod:`edge_bridge.export.reference`) holds the mean and
the Ledoit-Wolf covariance of ``target_front``'s output ``h`` on held-out windows, the composite's class
prior, and the means of ``h`` over every run of ``block`` consecutive held-out windows. Live, per stream,
:class:`DriftMonitor` keeps the last ``block`` windows that passed the quality gate and scores their mean
``h`` against the reference:

    score = (m - mu)^T P (m - mu) / d         m: mean h of the last ``block`` windows, P: reference precision

(the squared Mahalanobis distance per dimension; about 1 for a single typical window, lower for a mean).
Each window's ``h`` is first clipped to the reference's robust limits (median +- 4 robust SDs of the
held-out features, as at export), so one odd window cannot carry a minute's mean.
The class prior shift (total variation between the recent mean probabilities and the reference prior) is
reported beside it but raises nothing: a user may well spend an hour in one class.

Threshold from a false-alarm budget (``--drift-false-alarms-per-day N``). The reference's block means are
unshifted users (the held-out subjects) seen exactly as the device sees them; their scores are this
detector's null distribution. A few hundred of them cannot show a once-a-day tail directly, so the tail is
extrapolated: the null scores are moment-matched to a scaled chi-square ``c * chi2_k`` (k = 2 mean^2 / var,
c = var / (2 mean)), and the threshold is its upper quantile at ``p = N * hop_s / 86400`` (one decision per
hop; an alarm needs the score above the threshold, so the rate of alarms is at most the rate of
exceedances), never below the largest null score seen. ``bench/drift.py`` measures the false alarms this
gives on unshifted simulated users streamed through BrainFlow's playback board.

Within-session score (when the reference has ``session_*`` arrays, i.e. it was exported with the held-out
windows' subjects). A sensor change moves ``h`` less than one user differs from another, so the population
score cannot see it at a once-a-day budget; it moves ``h`` far more than one user's own minute-to-minute
spread. So each stream also keeps its own *baseline*: the mean ``h`` of its first ``session_baseline``
gate-passing windows after start (or after a bridge swap, :meth:`DriftMonitor.rebase`), and scores the
mean of the last ``block`` windows after the baseline against it, weighed with the *within-subject*
precision. The held-out sessions that give the null were only so long (``session_span`` windows), and a
user's state wanders further the longer one waits, so once a session is longer than that the baseline
slides forward: it is the oldest ``session_baseline`` of the last ``session_span`` windows.

    session score = (m - b)^T Pw (m - b) / d      b: baseline mean, Pw: within-subject precision

Its null distribution is the same comparison on the held-out users (their first minutes vs each later
minute, ``session_diffs``), and its threshold comes from the same budget by the same scaled chi-square
fit. Each detector thus spends the budget once, so the two together raise at most twice the budget's
false alarms (a union bound); ``bench/drift.py`` measures the rate of both together.

Signal detectors (when the reference has ``signal_*`` arrays, i.e. it was exported with the target spec).
The front is built to be robust, so a new sensor can leave ``h`` almost where it was while the bridge
behind it loses accuracy: ``bench/drift.py``'s inverted, low-passed PPG moved ``h`` less than a user's
own minute-to-minute spread. The model's *input* shows it plainly, so the same two scores (population
and within session, same fits, same budget each) run a second time on each window's shape and spectrum
descriptors (:func:`edge_bridge.signals.descriptors.signal_descriptors`: skewness, kurtosis, slope
skewness, band-power shares), as detectors ``signal`` and ``signal_session``. Each of the (up to) four
detectors spends the budget once, so together they raise at most four times its false alarms (a union
bound); the overlapping scores make the true rate far lower, and ``bench/drift.py`` measures it.

An alarm is an event, not a state per window: ``drift`` when a score first exceeds its threshold (the
event's ``detector`` names which: ``population``, ``session`` or both), and ``drift_cleared`` once every
score is below half of its threshold (hysteresis, so a score hovering at the threshold raises one event,
not one per hop).

Only windows that passed the quality gate ever reach :meth:`DriftMonitor.update` (the live loop feeds it
the model's rows, and bad windows never reach the model); a row whose ``h`` or logits are not finite is
ignored here as well. So a detached, flat, clipped or NaN sensor is the gate's business and never moves the
score. numpy and math only (no scipy or torch on this path).
"""

from __future__ import annotations

import collections
import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86400.0
DEFAULT_FALSE_ALARMS_PER_DAY = 1.0


def drift_score(m: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance per dimension of mean features ``m`` (..., d) from the reference."""
    diff = np.asarray(m, np.float64) - mean
    return np.einsum("...i,ij,...j->...", diff, precision, diff) / mean.size


def normal_isf(p: float) -> float:
    """Upper-tail quantile of the standard normal (``z`` with P(Z > z) = p), by bisection on erfc."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p!r}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(mid / math.sqrt(2.0)) > p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above)."""
    if x <= 0:
        return 1.0
    lg = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:  # P(a, x) by its series
        term = total = 1.0 / a
        n = a
        for _ in range(1000):
            n += 1.0
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(lg))
    b, c, d = x + 1.0 - a, 1e300, 1.0 / (x + 1.0 - a)  # Lentz's continued fraction for Q
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(lg) * h


def chi2_isf(p: float, k: float) -> float:
    """Upper-tail quantile of chi-square with ``k`` degrees of freedom (bisection on :func:`gamma_q`)."""
    if not 0.0 < p < 1.0 or not k > 0:
        raise ValueError(f"chi2_isf needs 0 < p < 1 and k > 0, got p={p!r}, k={k!r}")
    lo, hi = 0.0, max(10.0 * k, 10.0)
    while gamma_q(k / 2.0, hi / 2.0) > p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gamma_q(k / 2.0, mid / 2.0) > p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class DriftThreshold:
    """The alarm threshold and how it was set (for the summary and the event records)."""

    value: float
    false_alarms_per_day: float
    p_per_decision: float
    scale: float
    dof: float
    null_max: float
    null_blocks: int
    detector: str = "population"

    def describe(self) -> str:
        return (f"{self.detector} threshold {self.value:.3g} for {self.false_alarms_per_day:g} false "
                f"alarm(s)/day "
                f"(p {self.p_per_decision:.2g} per hop; null of {self.null_blocks} held-out blocks fitted as "
                f"{self.scale:.3g} x chi2({self.dof:.1f}), largest null score {self.null_max:.3g})")


class DriftReference:
    """A bundle's reference statistics (arrays of ``reference.npz``), checked for shape and finiteness.

    Raises
    ------
    ValueError
        Arrays missing, of the wrong shape, or not finite (the caller turns this into a clear line).
    """

    KEYS = ("mean", "precision", "prior", "block", "block_means")
    #: prefix of the signal descriptors' statistics (:data:`edge_bridge.export.reference.SIGNAL`)
    SIGNAL = "signal_"

    def __init__(self, arrays: dict[str, Any], prefix: str = "") -> None:
        glob = {"prior", "prior_argmax", "gate_pass_rate", "hop_s", "windows"}  # shared by every feature set
        if prefix:
            arrays = {**{k: v for k, v in arrays.items() if k in glob},
                      **{k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}}
        missing = [k for k in self.KEYS if k not in arrays]
        if missing:
            raise ValueError(f"the drift reference lacks {[prefix + k for k in missing]}; re-export the "
                             "bundle")
        self.mean = np.asarray(arrays["mean"], np.float64).reshape(-1)
        d = self.mean.size
        self.precision = np.asarray(arrays["precision"], np.float64)
        self.prior = np.asarray(arrays["prior"], np.float64).reshape(-1)
        self.block = int(_scalar(arrays["block"]))
        self.block_means = np.asarray(arrays["block_means"], np.float64)
        clip = _scalar(arrays.get("clip", np.inf))
        center = np.asarray(arrays.get("clip_center", np.zeros(d)), np.float64).reshape(-1)
        spread = np.asarray(arrays.get("clip_spread", np.zeros(d)), np.float64).reshape(-1)
        if center.size != d or spread.size != d:
            raise ValueError(f"the drift reference's clip limits have {center.size}/{spread.size} values "
                             f"for {d} features")
        self.low, self.high = (center - clip * spread, center + clip * spread) if np.isfinite(clip) else (
            np.full(d, -np.inf), np.full(d, np.inf))
        self.session_precision: np.ndarray | None = None
        self.session_diffs: np.ndarray | None = None
        self.session_baseline = self.block
        self.session_span = 0
        if "session_precision" in arrays and "session_diffs" in arrays:
            sp = np.asarray(arrays["session_precision"], np.float64)
            sd = np.asarray(arrays["session_diffs"], np.float64)
            sb = int(_scalar(arrays.get("session_baseline", self.block)))
            if sp.shape != (d, d) or sd.ndim != 2 or sd.shape[1] != d or len(sd) < 2 or sb < 1:
                raise ValueError(f"the drift reference's session statistics do not fit: precision {sp.shape},"
                                 f" diffs {sd.shape}, baseline {sb} for {d} features")
            if not (np.all(np.isfinite(sp)) and np.all(np.isfinite(sd))):
                raise ValueError("the drift reference's session statistics hold NaN or inf; re-export the "
                                 "bundle")
            # without a recorded span: the longest one held-out session could have given these diffs
            span = int(_scalar(arrays.get("session_span", len(sd) + sb + self.block - 1)))
            self.session_precision, self.session_diffs, self.session_baseline = sp, sd, sb
            self.session_span = max(span, sb + self.block)
        hop = _scalar(arrays.get("hop_s", np.nan))
        self.hop_s: float | None = hop if np.isfinite(hop) and hop > 0 else None
        rate = _scalar(arrays.get("gate_pass_rate", np.nan))
        self.gate_pass_rate = rate if np.isfinite(rate) else None
        if self.precision.shape != (d, d) or self.block_means.ndim != 2 or self.block_means.shape[1] != d:
            raise ValueError(f"the drift reference's shapes do not fit: mean {self.mean.shape}, precision "
                             f"{self.precision.shape}, block means {self.block_means.shape}")
        if self.block < 1 or len(self.block_means) < 2:
            raise ValueError(f"the drift reference has block {self.block} and {len(self.block_means)} block "
                             "means; it needs block >= 1 and at least 2 means")
        if not all(np.all(np.isfinite(a)) for a in (self.mean, self.precision, self.prior, self.block_means)):
            raise ValueError("the drift reference holds NaN or inf; re-export the bundle")
        #: the signal descriptors' own reference (bundles exported before them have none)
        self.signal: DriftReference | None = None
        if not prefix and f"{self.SIGNAL}mean" in arrays:
            self.signal = DriftReference(arrays, self.SIGNAL)
            if self.signal.block != self.block:
                raise ValueError(f"the drift reference's signal block ({self.signal.block}) differs from its "
                                 f"block ({self.block}); re-export the bundle")

    def at_hop(self, hop_s: float) -> DriftReference:
        """This reference for a device that predicts every ``hop_s`` seconds.

        The null was computed on held-out windows every ``self.hop_s`` seconds (the export spec's hop): a
        block of ``block`` of them is a minute of signal. A device that predicts at another hop (the demo
        answers every second from a model trained at 5 s hops) must average over the same *time*, else its
        means span less signal than the null's and run wider than the null says: false alarms. So block,
        session baseline and session span are rescaled to the same seconds; the null scores stay. A
        reference without a recorded hop (older bundles) is returned unchanged.
        """
        if self.hop_s is None or not hop_s > 0 or abs(hop_s - self.hop_s) < 1e-9:
            return self
        f = self.hop_s / float(hop_s)
        out = copy.copy(self)
        out.block = max(1, round(self.block * f))
        out.session_baseline = max(1, round(self.session_baseline * f))
        if self.session_span:
            out.session_span = max(round(self.session_span * f), out.session_baseline + out.block)
        out.hop_s = float(hop_s)
        if self.signal is not None:
            out.signal = self.signal.at_hop(hop_s)
        return out

    def null_scores(self) -> np.ndarray:
        return drift_score(self.block_means, self.mean, self.precision)

    def threshold(self, false_alarms_per_day: float, hop_s: float) -> DriftThreshold:
        """The population score above which an unshifted user raises ``false_alarms_per_day`` alarms."""
        return fit_threshold(self.null_scores(), false_alarms_per_day, hop_s, "population")

    @property
    def has_session(self) -> bool:
        """Whether the reference carries the within-session detector's statistics."""
        return self.session_precision is not None

    def session_null_scores(self) -> np.ndarray:
        """The held-out users' later minutes scored against their own first minutes (the session null)."""
        if self.session_precision is None or self.session_diffs is None:
            raise ValueError("the drift reference has no within-session statistics; re-export the bundle")
        return drift_score(self.session_diffs, np.zeros(self.mean.size), self.session_precision)

    def session_threshold(self, false_alarms_per_day: float, hop_s: float, name: str = "session"
                          ) -> DriftThreshold:
        """The session score's threshold for the same budget (see the module)."""
        return fit_threshold(self.session_null_scores(), false_alarms_per_day, hop_s, name)

    def signal_thresholds(self, false_alarms_per_day: float, hop_s: float
                          ) -> tuple[DriftThreshold, DriftThreshold | None] | None:
        """(population, session) thresholds of the signal descriptors' detectors; None without them."""
        sig = self.signal
        if sig is None:
            return None
        pop = fit_threshold(sig.null_scores(), false_alarms_per_day, hop_s, "signal")
        return pop, (sig.session_threshold(false_alarms_per_day, hop_s, "signal_session")
                     if sig.has_session else None)


def fit_threshold(null: np.ndarray, false_alarms_per_day: float, hop_s: float,
                  detector: str = "population") -> DriftThreshold:
    """The score above which ``null`` (scores of unshifted users) exceeds ``false_alarms_per_day`` times a
    day at one decision per ``hop_s``: a moment-matched scaled chi-square's upper quantile, never below the
    largest null score seen (see the module)."""
    if not false_alarms_per_day > 0:
        raise ValueError(f"the false-alarm budget must be > 0 per day, got {false_alarms_per_day!r}")
    null = np.asarray(null, np.float64).reshape(-1)
    mean, var = float(null.mean()), float(null.var())
    p = min(false_alarms_per_day * hop_s / SECONDS_PER_DAY, 0.5)
    if var <= 0 or mean <= 0:  # a degenerate reference: only the largest null score is evidence
        scale, dof, value = 0.0, 0.0, float(null.max())
    else:
        dof = max(2.0 * mean * mean / var, 0.5)
        scale = var / (2.0 * mean)
        value = scale * chi2_isf(p, dof)
    value = max(value, float(null.max()))
    return DriftThreshold(value, float(false_alarms_per_day), p, scale, dof, float(null.max()), len(null),
                          detector)


class DriftMonitor:
    """One stream's sliding drift estimate; :meth:`update` per gate-passing window, events out.

    Parameters
    ----------
    reference : DriftReference
    threshold : DriftThreshold
        The population score's.
    session_threshold : DriftThreshold, optional
        The within-session score's; None (or a reference without session statistics) leaves it off.
    signal_thresholds : (DriftThreshold, DriftThreshold or None), optional
        :meth:`DriftReference.signal_thresholds`: turns on the ``signal`` and ``signal_session`` detectors
        on the windows' descriptors (fed through ``update(..., signal=)``), when the reference has them.
    """

    def __init__(self, reference: DriftReference, threshold: DriftThreshold,
                 session_threshold: DriftThreshold | None = None,
                 signal_thresholds: tuple[DriftThreshold, DriftThreshold | None] | None = None) -> None:
        self.reference = reference
        self.threshold = threshold
        self.session_threshold = session_threshold if reference.has_session else None
        self.block = reference.block
        self.mean = reference.mean.copy()  # moved by rebase() after a calibration
        self._h: collections.deque[np.ndarray] = collections.deque(maxlen=self.block)
        self._p: collections.deque[np.ndarray] = collections.deque(maxlen=self.block)
        span = reference.session_span if self.session_threshold is not None else 0
        self._hist: collections.deque[np.ndarray] = collections.deque(maxlen=max(span, 1))
        self.baseline: np.ndarray | None = None
        self.score: float | None = None
        self.session_score: float | None = None
        self.prior_shift: float | None = None
        self.max_score = 0.0
        self.max_session_score = 0.0
        self.drifting = False
        self.alarms = 0
        self.by_detector: dict[str, int] = {}
        self.updates = 0
        self.ignored = 0
        #: the descriptors' detectors: a monitor of its own whose scores join this one's events
        self.signal: DriftMonitor | None = None
        if reference.signal is not None and signal_thresholds is not None:
            self.signal = DriftMonitor(reference.signal, *signal_thresholds)

    def _observe(self, h: np.ndarray) -> bool:
        """Add one window's (finite, right-sized) features; whether a full block is scored now."""
        hc = np.clip(h, self.reference.low, self.reference.high)
        self._h.append(hc)
        self.updates += 1
        self._update_session(hc)
        if len(self._h) < self.block:
            return False
        self.score = float(drift_score(np.mean(self._h, axis=0), self.mean, self.reference.precision))
        self.max_score = max(self.max_score, self.score)
        return True

    def update(self, h: np.ndarray, probs: np.ndarray, signal: np.ndarray | None = None
               ) -> dict[str, Any] | None:
        """Add one window's features, class probabilities and (with the signal detectors on) its signal
        descriptors; an event dict when the state changes. A window whose descriptors are missing or not
        finite while the signal detectors are on is ignored as a whole, so every detector sees the same
        windows."""
        h = np.asarray(h, np.float64).reshape(-1)
        probs = np.asarray(probs, np.float64).reshape(-1)
        sig = None
        if self.signal is not None:
            sig = None if signal is None else np.asarray(signal, np.float64).reshape(-1)
            if sig is None or sig.size != self.signal.mean.size or not np.all(np.isfinite(sig)):
                self.ignored += 1
                return None
        if not (np.all(np.isfinite(h)) and np.all(np.isfinite(probs))) or h.size != self.mean.size:
            self.ignored += 1
            return None
        self._p.append(probs)
        full = self._observe(h)
        if self.signal is not None:
            self.signal._observe(sig)
        if not full:
            return None
        if self.reference.prior.size == probs.size:
            self.prior_shift = float(0.5 * np.abs(np.mean(self._p, axis=0) - self.reference.prior).sum())
        scores = self._scores()
        over = [name for name, (x, tau) in scores.items() if x > tau]
        if not self.drifting and over:
            self.drifting = True
            self.alarms += 1
            detector = "+".join(over)
            self.by_detector[detector] = self.by_detector.get(detector, 0) + 1
            x, tau = scores[over[0]]
            return {"event": "drift", "detector": detector, "score": round(x, 4), "threshold": round(tau, 4),
                    **self._both(scores), "prior_shift": _round(self.prior_shift), "alarm": self.alarms}
        if self.drifting and all(x < 0.5 * tau for x, tau in scores.values()):
            self.drifting = False
            x, tau = scores["population"]
            return {"event": "drift_cleared", "score": round(x, 4), "threshold": round(tau, 4),
                    **self._both(scores), "prior_shift": _round(self.prior_shift)}
        return None

    def _update_session(self, hc: np.ndarray) -> None:
        """Score the last ``block`` windows against the oldest ``session_baseline`` of the history, once
        the two do not overlap (the history holds at most ``session_span`` windows: see the module)."""
        if self.session_threshold is None or self.reference.session_precision is None:
            return
        self._hist.append(hc)
        nb = self.reference.session_baseline
        if len(self._hist) < nb + self.block:
            return
        hist = np.asarray(self._hist)
        self.baseline = hist[:nb].mean(axis=0)
        m = hist[-self.block:].mean(axis=0)
        self.session_score = float(drift_score(m, self.baseline, self.reference.session_precision))
        self.max_session_score = max(self.max_session_score, self.session_score)

    def _scores(self) -> dict[str, tuple[float, float]]:
        """(score, threshold) per detector that has a score now."""
        out = {"population": (float(self.score or 0.0), self.threshold.value)}
        if self.session_threshold is not None and self.session_score is not None:
            out["session"] = (self.session_score, self.session_threshold.value)
        if self.signal is not None:
            sub = self.signal
            if sub.score is not None:
                out["signal"] = (sub.score, sub.threshold.value)
            if sub.session_threshold is not None and sub.session_score is not None:
                out["signal_session"] = (sub.session_score, sub.session_threshold.value)
        return out

    @staticmethod
    def _both(scores: dict[str, tuple[float, float]]) -> dict[str, Any]:
        return {"scores": {k: round(x, 4) for k, (x, _t) in scores.items()},
                "thresholds": {k: round(t, 4) for k, (_x, t) in scores.items()}}

    def recent_mean(self) -> np.ndarray | None:
        """Mean ``h`` of the windows in the sliding estimate (None before the first full block)."""
        return np.mean(self._h, axis=0) if len(self._h) == self.block else None

    def rebase(self, mean: np.ndarray | None = None) -> None:
        """Take ``mean`` (default: the recent mean) as the new normal, after a calibration kept a bridge
        fitted to it: the user's features moved for good, so only a further move is drift. The session
        baseline starts again from the next windows."""
        new = self.recent_mean() if mean is None else np.asarray(mean, np.float64).reshape(-1)
        if new is not None:
            self.mean = new
        if self.signal is not None:
            self.signal.rebase()
        self._h.clear()
        self._p.clear()
        self._hist.clear()
        self.baseline = None
        self.session_score = None
        self.drifting = False

    def status(self) -> dict[str, Any]:
        """The figures for the summary."""
        out = {"score": _round(self.score), "max_score": round(self.max_score, 4),
               "threshold": round(self.threshold.value, 4), "prior_shift": _round(self.prior_shift),
               "alarms": self.alarms, "alarms_by_detector": dict(self.by_detector), "drifting": self.drifting,
               "windows": self.updates, "ignored": self.ignored}
        if self.session_threshold is not None:
            out["session"] = {"score": _round(self.session_score),
                              "max_score": round(self.max_session_score, 4),
                              "threshold": round(self.session_threshold.value, 4),
                              "baseline_windows": self.reference.session_baseline,
                              "span_windows": self.reference.session_span,
                              "baseline_ready": self.baseline is not None}
        if self.signal is not None:
            sub = self.signal.status()
            out["signal"] = {k: sub[k] for k in ("score", "max_score", "threshold")}
            if "session" in sub:
                out["signal"]["session"] = {k: sub["session"][k] for k in ("score", "max_score", "threshold")}
        return out


def _scalar(x: Any) -> float:
    """A number stored in the .npz (0-d or one-element array)."""
    a = np.asarray(x, np.float64).reshape(-1)
    if a.size != 1:
        raise ValueError(f"the drift reference holds {a.size} values where one number belongs")
    return float(a[0])


def _round(x: float | None, n: int = 4) -> float | None:
    return None if x is None else round(x, n)


__all__ = ["DEFAULT_FALSE_ALARMS_PER_DAY", "DriftMonitor", "DriftReference", "DriftThreshold", "chi2_isf",
           "drift_score", "fit_threshold", "normal_isf"]
