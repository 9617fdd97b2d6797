"""Recordings: one object for every file format, and paired windows of two modalities."""

from edge_bridge.recordings.edf import read_edf, write_edf
from edge_bridge.recordings.recording import Annotation, Channel, Recording

__all__ = ["Annotation", "Channel", "Recording", "read_edf", "write_edf"]
