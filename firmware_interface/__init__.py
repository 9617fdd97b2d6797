"""Everything that talks to the wearable: BrainFlow boards, the frame protocol, buffers and the recorder.

A leaf package: it imports numpy, brainflow and (inside the serial transport) pyserial, never edge_bridge,
torch or scipy, so the device's live loop stays light. Names below load their module on first use, so
``import firmware_interface`` costs nothing and loads no native library.

Main entry points:

- :func:`open_source` (``"synthetic"``, ``"playback:FILE"``, ``"board:NAME,k=v"``, ``"tcp:HOST:PORT"``,
  ``"serial:PORT"``) -> a :class:`Source`: ``start()``, non-blocking ``read() -> Chunk``, ``stop()``.
- :class:`RingBuffer` for the live loop's windows; :func:`record` for durable on-site recording;
  :func:`write_playback_file` for realistic demos; :class:`FrameDecoder` / :func:`encode_frame` and
  :class:`FrameEmulator` for custom firmware.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BoardError": "errors", "FirmwareError": "errors", "FrameError": "errors", "ProfileError": "errors",
    "SourceError": "errors",
    "ChannelInfo": "channels", "DeviceProfile": "channels", "MODALITIES": "channels",
    "load_profile": "channels", "channels_from_descr": "channels", "read_sidecar": "channels",
    "RingBuffer": "buffer", "SequenceTracker": "buffer",
    "Chunk": "source", "Source": "source", "SourceStats": "source", "open_source": "factory",
    "parse_spec": "factory",
    "BrainFlowSource": "brainflow_source",
    "FrameSource": "frame_source",
    "TcpTransport": "transports", "SerialTransport": "transports",
    "Frame": "frames", "FrameDecoder": "frames", "encode_frame": "frames",
    "FrameEmulator": "emulator", "Corruption": "emulator",
    "CsvRecorder": "recorder", "record": "recorder",
    "write_playback_file": "playback",
    "set_brainflow_logging": "_brainflow",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_interface' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"firmware_interface.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
