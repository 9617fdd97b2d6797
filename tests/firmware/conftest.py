"""Shared fixtures for the firmware_interface tests.

The issue asks for three real-time runs (synthetic board 10 s, playback of a simulated recording, emulator
with corruption 10 s). Run one after another they would take half a minute, so the session starts all three
in background threads as soon as the first firmware test runs; the tests that check them wait for their
result while the other tests go on.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SYNTHETIC_SECONDS = 10.0
EMULATOR_SECONDS = 10.0
PLAYBACK_SECONDS = 4.0


@dataclass
class Run:
    """What a background run collected."""

    chunks: list = field(default_factory=list)
    seconds: float = 0.0
    stats: object = None
    extra: dict = field(default_factory=dict)


def simulated_recording(seconds: float, rate: float = 250.0, seed: int = 7) -> dict[str, np.ndarray]:
    """A small paired ECG + PPG recording: QRS-like spikes and a pulse wave at the same heart rate."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    hr = 1.2  # beats per second
    phase = (t * hr) % 1.0
    ecg = 1.2 * np.exp(-((phase - 0.3) ** 2) / 0.0004) - 0.15 * np.exp(-((phase - 0.36) ** 2) / 0.0006)
    ecg += 0.1 * np.sin(2 * np.pi * 0.3 * t) + 0.01 * rng.normal(size=t.size)
    ppg = 500 + 80 * np.exp(-((phase - 0.55) ** 2) / 0.01) + 20 * np.exp(-((phase - 0.75) ** 2) / 0.005)
    ppg += rng.normal(size=t.size)
    return {"ECG": ecg, "PPG": ppg}


def _synthetic_run() -> Run:
    from firmware_interface import open_source

    run = Run()
    src = open_source("synthetic", hop=0.05)
    t0 = time.monotonic()
    with src:  # streams from start() until stop(), which drains the board one last time
        while time.monotonic() - t0 < SYNTHETIC_SECONDS:
            time.sleep(0.1)
            run.chunks.append(src.read())
        run.seconds = time.monotonic() - t0
        src.stop()
        run.chunks.append(src.read())
        run.stats = src.stats
        run.extra["rate"] = src.sampling_rate
    return run


def _playback_run(folder: Path) -> Run:
    from firmware_interface import BrainFlowSource, write_playback_file

    sim = simulated_recording(PLAYBACK_SECONDS)
    path = write_playback_file([("ECG", "ecg", "mV", sim["ECG"]), ("PPG", "ppg", "a.u.", sim["PPG"])], 250.0,
                               folder / "sim.csv", subject="sim01")
    run = Run(extra={"path": path, "sim": sim})
    with BrainFlowSource.playback(path) as src:
        run.extra["channels"] = src.channels
        t0 = time.monotonic()
        while time.monotonic() - t0 < PLAYBACK_SECONDS + 5.0:
            time.sleep(0.1)
            chunk = src.read()
            run.chunks.append(chunk)
            if chunk.finished:
                break
        run.seconds = time.monotonic() - t0
        run.stats = src.stats
    return run


def _emulator_run() -> Run:
    from firmware_interface import Corruption, FrameEmulator, open_source

    sim = simulated_recording(EMULATOR_SECONDS, seed=11)
    data = np.stack([sim["ECG"], sim["PPG"]])
    emu = FrameEmulator(data, 250.0, modalities=["ecg", "ppg"], samples_per_frame=10,
                        corruption=Corruption(bit_flip=0.05, drop=0.05, garbage=0.05, seed=1234))
    run = Run(extra={"emu": emu})
    with emu, open_source(f"tcp:127.0.0.1:{emu.port}") as src:
        t0 = time.monotonic()
        while not emu.done.wait(0.1):
            run.chunks.append(src.read())
            if time.monotonic() - t0 > EMULATOR_SECONDS + 10:
                break
        time.sleep(0.3)  # let the reader thread take the last frame off the socket
        run.chunks.append(src.read())
        run.seconds = time.monotonic() - t0
        run.stats = src.stats
        run.extra["decoder"] = src.decoder.stats
        run.extra["channels"] = src.channels
    return run


@pytest.fixture(scope="session")
def _background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, concurrent.futures.Future]]:
    folder = tmp_path_factory.mktemp("playback")
    with concurrent.futures.ThreadPoolExecutor(max_workers=3, thread_name_prefix="fw-long-run") as pool:
        yield {"synthetic": pool.submit(_synthetic_run), "playback": pool.submit(_playback_run, folder),
               "emulator": pool.submit(_emulator_run)}


@pytest.fixture(autouse=True)
def _start_background(request: pytest.FixtureRequest) -> None:
    """Start the session runs with the first firmware test, if any selected test needs them."""
    if any("long_runs" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("_background")


@pytest.fixture
def long_runs(_background: dict[str, concurrent.futures.Future]) -> dict[str, concurrent.futures.Future]:
    return _background


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that wait for the session runs after the other firmware tests, which run meanwhile."""
    here = Path(__file__).parent
    slots = [k for k, item in enumerate(items) if here in Path(str(item.path)).parents]
    mine = [items[k] for k in slots]
    ordered = ([i for i in mine if "long_runs" not in getattr(i, "fixturenames", ())]
               + [i for i in mine if "long_runs" in getattr(i, "fixturenames", ())])
    for k, item in zip(slots, ordered, strict=True):
        items[k] = item
