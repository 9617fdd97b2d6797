"""The preprocessing spec: everything needed to turn raw samples of one modality into a model input.

The spec is data, not code, because it travels: the host writes it into the bundle manifest and the device
reads it back, so both run :func:`edge_bridge.signals.process_window` with identical settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from typing import Any

from edge_bridge.errors import SpecError

SCHEMA_VERSION = 1
MODALITIES = ("ecg", "ppg", "eeg", "emg", "resp", "eda", "acc")
NORMALISATIONS = ("zscore", "none")
#: "zerophase": forward-backward per window (what training has always used); "causal": forward only, state
#: carried through the stream (:class:`edge_bridge.signals.StreamPreprocessor`, cheap per hop)
FILTERINGS = ("zerophase", "causal")
REQUIRED_KEYS = ("modality", "channels", "input_rate", "output_rate", "window_s", "hop_s")


@dataclass(frozen=True)
class QualityLimits:
    """Thresholds of the signal-quality gate, in the channel's physical unit.

    Attributes
    ----------
    flat_ptp : float
        A channel whose peak-to-peak range in a window is below this is flat-lined (lead off, dead sensor).
    max_abs : float
        A sample whose magnitude exceeds this is implausible for the modality (motion artefact, wrong unit).
    clip_fraction : float
        A channel with more than this fraction of its samples pinned at the window's extreme value is
        clipped (saturated amplifier or ADC rail).
    min_beat_sqi : float
        ECG/PPG only: a channel whose beat-template index (:func:`edge_bridge.signals.physio.
        beat_template_sqi`, in [-1, 1]) is below this is flagged LOW_SQI; 0 turns the check off.
    max_motion : float or None
        A window whose accelerometer (when the source has one) shows more dynamic acceleration than this
        (RMS, g; :func:`edge_bridge.signals.physio.motion_energy`) is flagged MOTION; None turns it off.

    Defaults per modality are in :data:`DEFAULT_QUALITY`, measured by ``bench/quality.py``.
    """

    flat_ptp: float
    max_abs: float
    clip_fraction: float = 0.02
    min_beat_sqi: float = 0.0
    max_motion: float | None = None

    def __post_init__(self) -> None:
        if not (self.flat_ptp >= 0 and self.max_abs > 0 and 0 < self.clip_fraction <= 1):
            raise SpecError(
                "quality limits need flat_ptp >= 0, max_abs > 0 and 0 < clip_fraction <= 1, got "
                f"flat_ptp={self.flat_ptp}, max_abs={self.max_abs}, clip_fraction={self.clip_fraction}"
            )
        if not (isinstance(self.min_beat_sqi, int | float) and 0 <= self.min_beat_sqi <= 1):
            raise SpecError(f"min_beat_sqi must be in [0, 1] (0 = off), got {self.min_beat_sqi!r}")
        if self.max_motion is not None and not (isinstance(self.max_motion, int | float)
                                                and self.max_motion > 0):
            raise SpecError(f"max_motion must be a positive RMS acceleration in g, or None (off), got "
                            f"{self.max_motion!r}")


# Physical units as the simulator and the dataset readers store them: ECG/EMG mV, EEG uV, PPG arbitrary units
# (normalised so a pulse is ~1), respiration a.u., EDA uS. The broken-signal limits are generous: they catch
# broken signals, not merely noisy ones. The physiological ones (min_beat_sqi, max_motion) were measured with
# bench/quality.py (8 simulated stress subjects x 5 min, 60 s windows every 10 s, 200 windows per condition):
# PPG min_beat_sqi 0.8 passes 92 % of still windows (the rest carry the simulator's own motion bursts) and
# 28 % / 0 % / 1.5 % under stair-climbing movement of intensity 0.25 / 0.5 / 1 (0.9 passed the same still
# windows but also dropped the mildly disturbed 10 s windows calibration relies on); max_motion 0.02 g passes
# 100 % still (0.004 g) and 0 % moving (>= 0.07 g). Chest ECG keeps its beats under this movement (100 % pass
# at every intensity; its QRS detector works on QRS energy, 5-30 Hz), as it should, and its index still fails
# beats buried in noise (0.72 with white noise of half the ECG's standard deviation, 0 at twice it).
DEFAULT_QUALITY: dict[str, QualityLimits] = {
    "ecg": QualityLimits(flat_ptp=0.02, max_abs=20.0, min_beat_sqi=0.8),
    "ppg": QualityLimits(flat_ptp=1e-3, max_abs=1e4, min_beat_sqi=0.8, max_motion=0.02),
    "eeg": QualityLimits(flat_ptp=0.5, max_abs=2000.0),
    "emg": QualityLimits(flat_ptp=1e-3, max_abs=50.0),
    "resp": QualityLimits(flat_ptp=1e-3, max_abs=1e4),
    "eda": QualityLimits(flat_ptp=0.0, max_abs=200.0),
    "acc": QualityLimits(flat_ptp=0.0, max_abs=1e3),
}


def _quality_from_dict(data: Any, modality: Any) -> QualityLimits:
    """Quality limits from a manifest; limits it predates (e.g. ``min_beat_sqi`` in a bundle exported
    before the physiological gate) take the modality's defaults, so old bundles get the gate too."""
    if not isinstance(data, dict):
        raise SpecError(f"quality limits must be a JSON object, got {data!r}")
    known = {f.name for f in fields(QualityLimits)}
    unknown = sorted(set(data) - known)
    if unknown:
        warnings.warn(f"ignoring unknown quality limits {unknown} (written by a newer edge-bridge?); upgrade "
                      "to use them", stacklevel=3)
    base = DEFAULT_QUALITY.get(modality) if isinstance(modality, str) else None
    values = {k: v for k, v in data.items() if k in known}
    if base is not None:
        values = {**{k: v for k, v in asdict(base).items() if k not in ("flat_ptp", "max_abs")}, **values}
    try:
        return QualityLimits(**values)
    except TypeError as exc:
        raise SpecError(f"bad quality limits {data!r}: {exc}") from None


@dataclass(frozen=True)
class Preprocessing:
    """How one modality's raw window becomes a model input.

    Attributes
    ----------
    modality : str
        One of ``MODALITIES``.
    channels : tuple of str
        Channel names, in the order the model expects them.
    input_rate : float
        Sampling rate of the raw signal in Hz. A signal at another rate goes through :meth:`at_rate`
        (the same model input, resampled from that rate), never through this spec unchanged.
    output_rate : float
        Rate the model was trained at, in Hz; reached by rational resampling (``resample_poly``).
    bandpass : tuple of float or None
        Zero-phase Butterworth band-pass edges in Hz, applied at the input rate. ``None`` skips it.
    notch : float or None
        Powerline frequency to notch out (50 or 60 Hz), or ``None``.
    window_s, hop_s : float
        Window length and hop in seconds.
    normalise : str
        ``"zscore"`` (per window and channel) or ``"none"``.
    filter_order : int
        Butterworth order of the band-pass (applied forwards and backwards, so the effective order doubles).
    quality : QualityLimits
        Thresholds of the quality gate; defaults per modality.
    filtering : {"zerophase", "causal"}
        ``"zerophase"`` (default): each window is filtered forwards and backwards on its own
        (:func:`~edge_bridge.signals.process_windows`). ``"causal"``: the stream is filtered forwards with
        the filter state carried between hops (:class:`~edge_bridge.signals.StreamPreprocessor`; the file
        form is :func:`~edge_bridge.signals.process_recording`). The device serves a bundle the way its
        spec says, so what the model saw in training is what it sees live.
    pad_s : float or None
        Seconds of odd extension at each end of a window in the zero-phase filter. ``None`` (every spec
        written by export): scipy's default padding at ``input_rate``. :meth:`at_rate` sets it to those
        same seconds, so the filter's edge transient, and with it the model input, does not change with
        the sensor's rate (in samples the default would: 27 samples are 0.11 s at 250 Hz, 0.21 s at 128).
    """

    modality: str
    channels: tuple[str, ...]
    input_rate: float
    output_rate: float
    window_s: float
    hop_s: float
    bandpass: tuple[float, float] | None = None
    notch: float | None = None
    normalise: str = "zscore"
    filter_order: int = 4
    quality: QualityLimits = field(default=None)  # type: ignore[assignment]
    filtering: str = "zerophase"
    pad_s: float | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise SpecError(f"modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        object.__setattr__(self, "channels", tuple(self.channels))
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise SpecError(f"channels must be a non-empty list of unique names, got {list(self.channels)}")
        for name in ("input_rate", "output_rate", "window_s", "hop_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise SpecError(f"{name} must be a positive number, got {value!r}")
        if self.normalise not in NORMALISATIONS:
            raise SpecError(f"normalise must be one of {NORMALISATIONS}, got {self.normalise!r}")
        if self.filtering not in FILTERINGS:
            raise SpecError(f"filtering must be one of {FILTERINGS}, got {self.filtering!r}")
        if self.bandpass is not None:
            lo, hi = (float(v) for v in self.bandpass)
            object.__setattr__(self, "bandpass", (lo, hi))
            if not 0 <= lo < hi < self.input_rate / 2:
                raise SpecError(
                    f"bandpass must satisfy 0 <= low < high < input_rate/2 = {self.input_rate / 2:g} Hz, "
                    f"got ({lo:g}, {hi:g})"
                )
            if hi >= self.output_rate / 2:
                raise SpecError(
                    f"bandpass high edge {hi:g} Hz is at or above the output Nyquist "
                    f"{self.output_rate / 2:g} Hz; lower it or raise output_rate"
                )
        if self.notch is not None and not 0 < self.notch < self.input_rate / 2:
            raise SpecError(f"notch must lie in (0, {self.input_rate / 2:g}) Hz, got {self.notch!r}")
        if self.pad_s is not None and not (isinstance(self.pad_s, int | float)
                                           and 0 <= self.pad_s < self.window_s):
            raise SpecError(f"pad_s must be in [0, window_s={self.window_s:g}) seconds, got {self.pad_s!r}")
        if not isinstance(self.filter_order, int) or not 1 <= self.filter_order <= 10:
            raise SpecError(f"filter_order must be an integer in [1, 10], got {self.filter_order!r}")
        if self.quality is None:
            object.__setattr__(self, "quality", DEFAULT_QUALITY[self.modality])
        for rate_name in ("input_rate", "output_rate"):
            n = getattr(self, rate_name) * self.window_s
            if abs(n - round(n)) > 1e-6:
                raise SpecError(
                    f"window_s={self.window_s:g} s is not a whole number of samples at "
                    f"{rate_name}={getattr(self, rate_name):g} Hz"
                )
        hop_n = self.input_rate * self.hop_s
        if abs(hop_n - round(hop_n)) > 1e-6:
            raise SpecError(
                f"hop_s={self.hop_s:g} s is not a whole number of samples at {self.input_rate:g} Hz"
            )
        self.resample_ratio  # noqa: B018 - validates that the rates have a rational ratio

    # --- derived sizes -------------------------------------------------------------------------------
    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def window_samples(self) -> int:
        """Raw samples per window, at ``input_rate``."""
        return round(self.input_rate * self.window_s)

    @property
    def hop_samples(self) -> int:
        """Raw samples per hop, at ``input_rate``."""
        return round(self.input_rate * self.hop_s)

    @property
    def output_samples(self) -> int:
        """Samples per processed window, at ``output_rate``."""
        return round(self.output_rate * self.window_s)

    @property
    def resample_ratio(self) -> tuple[int, int]:
        """``(up, down)`` for ``resample_poly``; rates must have a small rational ratio."""
        out = Fraction(self.output_rate).limit_denominator(1000)
        ratio = out / Fraction(self.input_rate).limit_denominator(1000)
        inexact = abs(float(ratio) - self.output_rate / self.input_rate) > 1e-9
        if inexact or max(ratio.numerator, ratio.denominator) > 10_000:
            raise SpecError(
                f"output_rate/input_rate = {self.output_rate:g}/{self.input_rate:g} is not a small rational "
                "ratio; pick rates whose ratio has a numerator and denominator below 10000"
            )
        return ratio.numerator, ratio.denominator

    def filter_padding(self) -> int:
        """Samples of odd extension the zero-phase filter uses at ``input_rate`` (see ``pad_s``)."""
        from edge_bridge.signals.filters import default_padlen, filter_sos

        if self.pad_s is not None:
            return round(self.pad_s * self.input_rate)
        sos = filter_sos(float(self.input_rate), self.bandpass, self.notch, self.filter_order)
        return default_padlen(sos) if sos is not None else 0

    @property
    def min_input_rate(self) -> float:
        """Raw rates must lie strictly above this (Hz): twice the band's upper edge, else 0 (no band kept)."""
        return 2.0 * self.bandpass[1] if self.bandpass is not None else 0.0

    def at_rate(self, rate: float) -> Preprocessing:
        """This spec for raw samples at ``rate`` Hz: the same model input, reached from another sensor rate.

        Everything the model sees stays (output rate, window and hop in seconds, band, normalisation); the
        band-pass is designed at ``rate`` and the polyphase resampler (:func:`scipy.signal.resample_poly`,
        anti-aliased) takes the window to ``output_rate`` in :func:`edge_bridge.signals.process_windows`
        and :class:`edge_bridge.signals.StreamPreprocessor` alike. A powerline notch at or above the new
        Nyquist frequency is dropped: the sensor's own anti-aliasing removed the mains before sampling,
        and the band-pass removes everything above the band.

        Raises
        ------
        SpecError
            When ``rate`` is not above :attr:`min_input_rate` (the message names the minimum), gives no
            whole number of samples per window or hop, or has no small rational ratio to ``output_rate``.

        Examples
        --------
        >>> spec.input_rate, spec.at_rate(128).input_rate   # a 64 Hz PPG spec fed by a 128 Hz wristband
        (64.0, 128.0)
        """
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
            raise SpecError(f"a sampling rate must be a positive number of Hz, got {rate!r}")
        rate = float(rate)
        if abs(rate - self.input_rate) <= 1e-9 * self.input_rate:
            return self
        need = self.min_input_rate
        if rate <= need:
            raise SpecError(
                f"{self.modality} sampled at {rate:g} Hz is too slow for this model: its band reaches "
                f"{need / 2:g} Hz, so the sensor must sample above {need:g} Hz (twice the band's "
                f"edge); use a rate above {need:g} Hz, e.g. {self.input_rate:g} Hz")
        notch = self.notch if self.notch is None or self.notch < rate / 2 else None
        pad_s = self.pad_s if self.pad_s is not None else self.filter_padding() / self.input_rate
        try:
            return dataclasses.replace(self, input_rate=rate, notch=notch, pad_s=pad_s)
        except SpecError as exc:
            raise SpecError(f"{self.modality} sampled at {rate:g} Hz cannot be brought to this model's "
                            f"{self.output_rate:g} Hz input: {exc}") from None

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(n_channels, output_samples)``: the tensor one window becomes."""
        return (self.n_channels, self.output_samples)

    # --- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["bandpass"] = list(self.bandpass) if self.bandpass is not None else None
        d["schema_version"] = SCHEMA_VERSION
        if self.filtering == "zerophase":  # the default: manifests written before the field stay byte-equal
            del d["filtering"]
        if self.pad_s is None:  # likewise
            del d["pad_s"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Rebuild a spec; unknown keys (from a newer tool) are dropped with a warning, missing ones raise."""
        if not isinstance(data, dict):
            raise SpecError(f"a preprocessing spec must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SpecError(
                f"preprocessing spec has schema_version {version!r}, this tool reads up to {SCHEMA_VERSION}; "
                "upgrade edge-bridge"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(
                f"ignoring unknown preprocessing keys {unknown} (written by a newer edge-bridge?); "
                "upgrade to use them",
                stacklevel=2,
            )
        missing = sorted(set(REQUIRED_KEYS) - set(data))
        if missing:
            raise SpecError(f"preprocessing spec is missing required key(s) {missing}")
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("bandpass") is not None:
            kwargs["bandpass"] = tuple(kwargs["bandpass"])
        if kwargs.get("quality") is not None:
            kwargs["quality"] = _quality_from_dict(kwargs["quality"], kwargs.get("modality"))
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"preprocessing spec is not valid JSON: {exc}") from None
        return cls.from_dict(data)
