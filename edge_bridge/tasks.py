"""The paper's tasks as presets: which modality is source and target, their preprocessing, the classes.

The simulator writes recordings with exactly these channel names and raw rates, and the readers of the
published datasets map their channels onto them, so every step downstream can start from a task name.

=========  =====================  ======================  =================================  ==========
task       source (rate in->out)  target (rate in->out)   classes                            window/hop
=========  =====================  ======================  =================================  ==========
stress     ECG 250 -> 100 Hz      wrist PPG 64 -> 125 Hz  baseline, stress, amusement        60 s / 5 s
stress-    (as stress)            (as stress)             non-stress (baseline + amusement),  60 s / 5 s
binary                                                    stress
sleep      6 EEG 200 -> 200 Hz    ECG 200 -> 100 Hz       wake, sleep                        30 s / 30 s
fog        6 EEG 500 -> 200 Hz    3 EMG 500 -> 130 Hz     no-fog, fog                        3 s / 1 s
=========  =====================  ======================  =================================  ==========

``stress+eda`` and ``stress-binary+eda`` are ``stress`` / ``stress-binary`` with wrist EDA (4 Hz, low-pass
1 Hz, the same 60 s / 5 s windows) as a second target in ``Task.extra_targets``, for a fused bridge.

(WESAD's chest ECG is 700 Hz; use :func:`Task.with_rates` to adapt a preset to another device's rate.)

``stress-binary`` reads the same recordings as ``stress`` and merges baseline and amusement into one class,
the stress-vs-non-stress setting most WESAD work reports (Schmidt et al., 2018). Its ``label_map`` says
which annotation becomes which class; the recordings themselves keep the three conditions.

``fog`` is the paper's third dataset (Zhang et al., Sci. Data 2022, read by
:func:`edge_bridge.recordings.fog.read_fog`): six EEG channels at the paper's 200 Hz as the source with
the task model, three EMG channels at its 130 Hz as the target, 3 s windows every 1 s. The channel counts
and rates are BioX-Bridge's FOG inputs (``shared/golden/labram/schema.json``: EEG F3, C3, O1, F4, C4, O2 at
200 Hz; ``shared/golden/normwear/schema.json``: 3 EMG channels, 390 samples at 130 Hz), so the published
LaBraM and NormWear configs of the ``fog_eeg2emg`` preset fit. Which file columns hold the EMG is not
described anywhere found, so the three are named by the user (``--channels EMG-A=col:27,EMG-B=col:28,
EMG-C=col:30``, see :mod:`edge_bridge.recordings.fog`). A freeze often lasts
only seconds, so a window keeps its majority label when that label covers >= 80 % of it
(``min_label_fraction``); every other task labels only pure windows. Its splits are by subject like every
task's: the reader gives each file its patient's code, so one patient's overlapping windows never land in
two roles (the paper split them at random, which leaks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edge_bridge.errors import SpecError
from edge_bridge.signals.spec import Preprocessing, QualityLimits

EEG_CHANNELS = ("F3-A2", "C3-A2", "O1-A2", "F4-A1", "C4-A1", "O2-A1")
#: The FOG dataset's 25 EEG channels in file order (columns 2-26 of a FilteredData file), as the dataset's
#: own processing code names them (AccSrd/multimodal-Parkinson-data-processing, settings.toml,
#: PREP_COLNAME_EEG); see :mod:`edge_bridge.recordings.fog`.
FOG_EEG_CHANNELS = ("FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "P7", "P8",
                    "Fz", "Cz", "Pz", "FC1", "FC2", "CP1", "CP2", "FC5", "FC6", "CP5", "CP6")
#: The six of them BioX-Bridge feeds LaBraM for FOG (the ISRUC montage's sites, in its order)
FOG_SOURCE_EEG = ("F3", "C3", "O1", "F4", "C4", "O2")


@dataclass(frozen=True)
class Task:
    """A bridging task: the source modality has the labels and task model, the target is what we wear."""

    name: str
    source: Preprocessing
    target: Preprocessing
    classes: tuple[str, ...]
    label_map: dict[str, str] = field(default_factory=dict)
    """Annotation label -> class, when a class gathers several annotated conditions; empty = identity."""
    extra_targets: tuple[Preprocessing, ...] = ()
    """Further target modalities worn beside ``target`` (e.g. wrist EDA beside PPG) for a fused bridge;
    windowed in lockstep with ``target`` and keyed by their modality name. Empty (every preset but the
    ``+eda`` ones): the single-target task, read exactly as before."""
    min_label_fraction: float = 1.0
    """A window gets the label that covers at least this fraction of it (> 0.5, so a majority), else -1.
    1.0 (every preset but ``fog``): only windows inside one labelled segment are labelled."""

    def __post_init__(self) -> None:
        f = self.min_label_fraction
        if not (isinstance(f, int | float) and 0.5 < f <= 1.0):
            raise SpecError(f"task {self.name!r}: min_label_fraction must be in (0.5, 1] (the share of a "
                            f"window its label must cover; 1.0 = pure windows only), got {f!r}")
        names = [t.modality for t in self.extra_targets]
        clash = sorted({n for n in names if names.count(n) > 1 or n in ("source", "target")})
        if clash or any(t.modality == self.target.modality for t in self.extra_targets):
            raise SpecError(f"task {self.name!r}: extra targets need distinct modalities other than the main "
                            f"target's ({self.target.modality}), got {names}")
        for t in self.extra_targets:
            if abs(t.window_s - self.target.window_s) > 1e-9 or abs(t.hop_s - self.target.hop_s) > 1e-9:
                raise SpecError(f"task {self.name!r}: extra target {t.modality} uses {t.window_s:g}/"
                                f"{t.hop_s:g} s windows, the target {self.target.window_s:g}/"
                                f"{self.target.hop_s:g} s; lockstep windows need the same window and hop")

    @property
    def targets(self) -> tuple[Preprocessing, ...]:
        """Every target spec, main first: ``(target, *extra_targets)``."""
        return (self.target, *self.extra_targets)

    @property
    def target_keys(self) -> tuple[str, ...]:
        """Window keys of the targets in :attr:`targets` order: ``"target"``, then each extra's modality."""
        return ("target", *(t.modality for t in self.extra_targets))

    def with_rates(self, *, source_rate: float | None = None, target_rate: float | None = None) -> Task:
        """The same task for a device whose raw rates differ (the output rates, i.e. the models, stay)."""
        src = dataclasses.replace(self.source, input_rate=source_rate or self.source.input_rate)
        tgt = dataclasses.replace(self.target, input_rate=target_rate or self.target.input_rate)
        return dataclasses.replace(self, source=src, target=tgt)

    def with_window(self, window_s: float, hop_s: float) -> Task:
        """The same task with another window and hop (e.g. shorter windows for a quick demo)."""
        src = dataclasses.replace(self.source, window_s=window_s, hop_s=hop_s)
        tgt = dataclasses.replace(self.target, window_s=window_s, hop_s=hop_s)
        extra = tuple(dataclasses.replace(t, window_s=window_s, hop_s=hop_s) for t in self.extra_targets)
        return dataclasses.replace(self, source=src, target=tgt, extra_targets=extra)


_STRESS = Task(
    "stress",
    source=Preprocessing("ecg", ("ECG",), input_rate=250, output_rate=100, window_s=60, hop_s=5,
                         bandpass=(0.5, 40.0), notch=50.0),
    target=Preprocessing("ppg", ("PPG",), input_rate=64, output_rate=125, window_s=60, hop_s=5,
                         bandpass=(0.5, 8.0)),
    classes=("baseline", "stress", "amusement"),
)

#: Wrist EDA (WESAD's E4: 4 Hz) as a second stress target: a 1 Hz low-pass keeps the tonic drift and the
#: skin-conductance responses (rise ~1 s, decay seconds), whose rate is what stress raises; kept at 4 Hz
#: (240 samples per 60 s window), with the PPG's window and hop so the two are windowed in lockstep.
WRIST_EDA = Preprocessing("eda", ("EDA",), input_rate=4, output_rate=4, window_s=60, hop_s=5,
                          bandpass=(0.0, 1.0))

TASKS: dict[str, Task] = {
    "stress": _STRESS,
    "stress-binary": dataclasses.replace(
        _STRESS, name="stress-binary", classes=("non-stress", "stress"),
        label_map={"baseline": "non-stress", "amusement": "non-stress", "stress": "stress"}),
    # the same stress tasks with wrist EDA (WRIST_EDA) beside PPG, for a fused (PPG+EDA) bridge
    "stress+eda": dataclasses.replace(_STRESS, name="stress+eda", extra_targets=(WRIST_EDA,)),
    "stress-binary+eda": dataclasses.replace(
        _STRESS, name="stress-binary+eda", classes=("non-stress", "stress"), extra_targets=(WRIST_EDA,),
        label_map={"baseline": "non-stress", "amusement": "non-stress", "stress": "stress"}),
    "sleep": Task(
        "sleep",
        source=Preprocessing("eeg", EEG_CHANNELS, input_rate=200, output_rate=200, window_s=30, hop_s=30,
                             bandpass=(0.3, 35.0), notch=50.0),
        target=Preprocessing("ecg", ("ECG",), input_rate=200, output_rate=100, window_s=30, hop_s=30,
                             bandpass=(0.5, 40.0), notch=50.0),
        classes=("wake", "sleep"),
    ),
    # the paper's FOG setting: EEG 200 Hz <-> EMG 130 Hz, 3 s windows (FilteredData files are 500 Hz).
    # EEG band 0.5-45 Hz (below the 100 Hz output Nyquist), EMG 20-60 Hz (surface EMG above motion
    # artefacts, below the 65 Hz Nyquist of 130 Hz), both with a 50 Hz notch (recorded in China). The
    # files state no EMG unit (their sample rows hold values in the hundreds), so the EMG gate catches only
    # flat, non-finite or absurd signals rather than judging amplitudes in mV.
    "fog": Task(
        "fog",
        source=Preprocessing("eeg", FOG_SOURCE_EEG, input_rate=500, output_rate=200, window_s=3, hop_s=1,
                             bandpass=(0.5, 45.0), notch=50.0),
        target=Preprocessing("emg", ("EMG-A", "EMG-B", "EMG-C"), input_rate=500, output_rate=130, window_s=3,
                             hop_s=1, bandpass=(20.0, 60.0), notch=50.0,
                             quality=QualityLimits(flat_ptp=1e-3, max_abs=1e6)),
        classes=("no-fog", "fog"),
        min_label_fraction=0.8,
    ),
}


def get_task(name: str) -> Task:
    """Look up a task preset by name; the error lists the valid ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise SpecError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None
