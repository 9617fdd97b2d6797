"""One preprocessing pipeline for host and device: spec, windowing, filtering, quality (numpy/scipy only)."""

from edge_bridge.signals.processing import cut_windows, process_window, process_windows
from edge_bridge.signals.quality import (
    Quality,
    accelerometer_spec,
    assess_quality,
    describe_flags,
    motion_flags,
)
from edge_bridge.signals.spec import DEFAULT_QUALITY, MODALITIES, Preprocessing, QualityLimits
from edge_bridge.signals.stream import (
    PolyphaseResampler,
    StreamPreprocessor,
    StreamWindower,
    process_recording,
)

__all__ = [
    "DEFAULT_QUALITY",
    "MODALITIES",
    "PolyphaseResampler",
    "Preprocessing",
    "Quality",
    "QualityLimits",
    "StreamPreprocessor",
    "StreamWindower",
    "accelerometer_spec",
    "assess_quality",
    "cut_windows",
    "describe_flags",
    "motion_flags",
    "process_recording",
    "process_window",
    "process_windows",
]
