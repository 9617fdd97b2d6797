"""Recordings: one object for every file format, and paired windows of two modalities."""

from edge_bridge.recordings.brainflow_csv import read_brainflow_csv, write_brainflow_csv
from edge_bridge.recordings.edf import read_edf, write_edf
from edge_bridge.recordings.io import read_recording
from edge_bridge.recordings.isruc import read_isruc
from edge_bridge.recordings.recording import Annotation, Channel, Recording
from edge_bridge.recordings.wesad import read_wesad

__all__ = [
    "Annotation",
    "Channel",
    "Recording",
    "read_brainflow_csv",
    "read_edf",
    "read_isruc",
    "read_recording",
    "read_wesad",
    "write_brainflow_csv",
    "write_edf",
]
