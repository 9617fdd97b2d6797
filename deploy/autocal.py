"""``deploy --auto-calibrate``: on drift, recalibrate the bridge on site without stopping the live loop.

The loop hands this module a drift event, the raw rows of every chunk it reads and the paired-watch
verdict of every window (composite vs source model, :mod:`deploy.watch`). One cycle, each step an event in
the sinks (``{"event": "autocal", "step": ...}``):

1. ``recording``: the drifted stream carries the source modality, so its raw BrainFlow rows (both ECG and
   PPG, as the board gives them) go to a durable BrainFlow CSV + sidecar
   (:class:`firmware_interface.recorder.CsvRecorder`, fsynced per chunk) for ``minutes``, and on past them
   until the source model has decided ``min_states`` classes on the recorded windows (at most
   ``max_minutes``). Why: calibrate cannot judge a refit on windows of one state (it keeps the current
   bridge, or with ``--min-states 1`` judges by the loss alone: a forced cycle on one state published a
   bridge whose paired agreement fell from 0.75 to 0.42), and a drift event often comes inside one long
   state. The writes run in a thread of their own, so the loop only enqueues a reference to each chunk.
   Meanwhile the paired watch counts how often the current bridge agrees with the source model: the
   *before* figure.
2. ``calibrating``: ``edge-bridge calibrate --bundle B --paired REC`` in a child process at lower priority
   (``os.nice``), with one math thread; the loop polls it once per hop and never waits for it. calibrate
   validates the refit on held-out pairs and publishes it atomically (``published``), or keeps the current
   bridge (``not_published``, with calibrate's verdict) or fails (``failed``).
3. ``swapped``: the :class:`deploy.live.BridgeWatcher` picks the published version up between two windows
   (its self-test first), exactly as for a hand-run calibrate.
4. ``kept`` or ``rolled_back``: after as many paired windows as the *before* figure had (``eval_windows``),
   the agreement of the new bridge is compared with it (balanced over the source model's states when both
   figures show two or more, as calibrate's verdict; plain otherwise). Worse (less than before +
   ``margin``): ``calibrate --rollback`` in a child process makes the previous version current again and
   the watcher swaps back.

Without the source modality on the drifted stream the cycle cannot start: an ``unavailable`` event says so
and names the command to run with a chest strap on. deploy never imports calibrate (the house rule keeps
the live loop a watcher of the bundle); the child process is the only link.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

IDLE, RECORDING, CALIBRATING, SWAPPING, EVALUATING, ROLLING_BACK = (
    "idle", "recording", "calibrating", "swapping", "evaluating", "rolling back")


@dataclass
class AutoCalibrateConfig:
    """Settings of ``--auto-calibrate``.

    Attributes
    ----------
    minutes : float
        Paired minutes to record at least before calibrating (calibrate needs 11 windows at least).
    min_states : int
        Record on past ``minutes`` until the source model has decided this many classes on the recorded
        windows; also calibrate's ``--min-states`` unless ``calibrate_args`` gives one.
    max_minutes : float or None
        The recording ends here even with fewer states (calibrate then decides); default 3 x ``minutes``.
    record_dir : Path or None
        Where recordings, child logs and reports go (default ``BUNDLE.autocal/`` beside the bundle: a bundle
        holds only what its manifest lists).
    nice : int
        Added to the child's niceness (lower priority than the live loop).
    margin : float
        The new bridge is kept only if its paired agreement is at least the old one's plus this.
    eval_windows : int
        Paired windows to judge the new bridge on; 0: as many as the old one was judged on.
    calibrate_args : tuple of str
        Extra arguments for ``edge-bridge calibrate`` (e.g. ``("--method", "closed-form")``).
    swap_timeout : float
        Seconds to wait for the watcher to swap a published bridge in before calling the cycle failed.
    """

    minutes: float = 3.0
    min_states: int = 2
    max_minutes: float | None = None
    record_dir: Path | None = None
    nice: int = 10
    margin: float = 0.0
    eval_windows: int = 0
    calibrate_args: tuple[str, ...] = ()
    swap_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.min_states < 1:
            raise ValueError(f"min_states must be at least 1, got {self.min_states}")
        if self.max_minutes is not None and self.max_minutes < self.minutes:
            raise ValueError(f"max_minutes ({self.max_minutes:g}) must be at least minutes "
                             f"({self.minutes:g})")

    @property
    def longest(self) -> float:
        """The most minutes a cycle records."""
        return self.max_minutes if self.max_minutes is not None else 3.0 * self.minutes


#: a class counts as a state of some windows only when decided on this many of them and this share: on a
#: 1 s hop the source model flickers to another class for a window or two at a change of state
MIN_STATE_WINDOWS = 2
MIN_STATE_SHARE = 0.05


def state_floor(windows: int) -> int:
    """How many of ``windows`` a class must be decided on to be a state, not a flicker.

    One rule for the live keep-or-roll-back check here and calibrate's verdicts
    (``calibrate.core.decided_states``), so both count the same states; it lives on the device side
    because deploy never imports calibrate.
    """
    return max(MIN_STATE_WINDOWS, math.ceil(MIN_STATE_SHARE * windows))


@dataclass
class _Tally:
    """Paired-watch verdicts, counted per class the source model decided."""

    n: int = 0
    agreed: int = 0
    by_class: dict[int, list[int]] = field(default_factory=dict)  # class -> [windows, agreed]

    def add(self, agrees: bool, source_class: int | None) -> None:
        self.n += 1
        self.agreed += int(agrees)
        if source_class is not None:
            c = self.by_class.setdefault(int(source_class), [0, 0])
            c[0] += 1
            c[1] += int(agrees)

    @property
    def rate(self) -> float | None:
        return self.agreed / self.n if self.n else None

    def states(self) -> list[int]:
        floor = state_floor(self.n)
        return sorted(k for k, (n, _) in self.by_class.items() if n >= floor)

    def balanced(self) -> float | None:
        """Mean agreement over the states, each alike; None on fewer than two states."""
        states = self.states()
        if len(states) < 2:
            return None
        return sum(self.by_class[k][1] / self.by_class[k][0] for k in states) / len(states)


def compare(before: _Tally, after: _Tally) -> tuple[str, float | None, float | None]:
    """Which agreement the keep-or-roll-back verdict compares, and its two values.

    Balanced agreement when both tallies show two states or more, as calibrate's verdict: plain agreement
    rewards the majority state, and a bridge that decides it everywhere would be kept over one that tells
    the states apart. On fewer states the plain rate (one state cannot show that difference).
    """
    b, a = before.balanced(), after.balanced()
    if b is not None and a is not None:
        return "balanced", b, a
    return "plain", before.rate, after.rate


class _Recorder:
    """A durable CSV recorder fed from the loop through a queue; the fsyncs happen in this thread."""

    def __init__(self, path: Path, sidecar: dict[str, Any], num_rows: int) -> None:
        from firmware_interface.recorder import CsvRecorder

        self.rec = CsvRecorder(path, sidecar, num_rows)
        self.path = path
        self.samples = 0  # enqueued (the loop's count); the file holds them once the thread is done
        self.finished = False
        self.error: str = ""
        self._q: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="edge-bridge autocal recorder", daemon=True)
        self._thread.start()

    def feed(self, raw: Any) -> None:
        self.samples += int(raw.shape[1])
        self._q.put(raw)

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self._q.put(None)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while (raw := self._q.get()) is not None:
                if not self.error:
                    self.rec.append(raw)
        except Exception as exc:  # a full disk: say so in the cycle's events, never crash the loop
            self.error = f"recording failed: {exc}"
        finally:
            try:
                self.rec.close()
            except Exception as exc:
                self.error = self.error or f"closing the recording failed: {exc}"


class AutoCalibrator:
    """The cycle's state machine; the loop calls :meth:`on_drift`, :meth:`feed`, :meth:`paired` and
    :meth:`tick` (once per hop) and emits the events they return.

    Parameters
    ----------
    bundle_root : Path
    config : AutoCalibrateConfig
    bridge_version : callable
        Returns the bridge version the loop runs now (the watcher moves it).
    """

    def __init__(self, bundle_root: Path, config: AutoCalibrateConfig, bridge_version: Any) -> None:
        self.root = Path(bundle_root)
        self.config = config
        self._version = bridge_version
        self.dir = Path(config.record_dir) if config.record_dir else self.root.with_name(self.root.name
                                                                                        + ".autocal")
        self.state = IDLE
        self.stream: str | None = None
        self.before = _Tally()
        self.after = _Tally()
        self.old_version = 0
        self.new_version = 0
        self.cycles = 0
        self.events: list[dict[str, Any]] = []
        self._rec: _Recorder | None = None
        self._rec_target = 0  # samples: at least this many (minutes) ...
        self._rec_limit = 0  # ... and at most this many (max_minutes)
        self._rate = 0.0
        self._states: set[int] = set()  # classes the source model decided on the recorded windows
        self._child: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._since = 0.0
        self._report: Path | None = None

    # --- inputs from the loop -------------------------------------------------------------------------
    def on_drift(self, stream: str, source: Any, paired: bool, rate: float) -> list[dict[str, Any]]:
        """A drift event on ``stream``: start a cycle if none runs and the stream can be recorded."""
        if self.state != IDLE:
            return [self._event("busy", stream, detail=f"a cycle is already {self.state}; this drift event "
                                                        "starts none")]
        if not paired:
            return [self._event("unavailable", stream, detail=(
                "this stream does not carry the source modality, so the bridge cannot be refit here. Wear "
                f"the chest strap and run: edge-bridge calibrate --bundle {self.root} --record --duration "
                f"{60 * self.config.minutes:g} --board NAME (or record paired data and pass it with "
                "--paired)"))]
        needed = ("descr_board_id", "board_name", "channels", "timestamp_row", "package_num_row",
                  "marker_row", "num_rows")
        if any(not hasattr(source, a) for a in needed):
            return [self._event("unavailable", stream, detail=(
                "the source gives no raw BrainFlow rows to record (a frame device); record paired minutes "
                f"with: edge-bridge calibrate --bundle {self.root} --record --board NAME"))]
        from firmware_interface.channels import make_sidecar

        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"autocal-{stamp}-{self.cycles + 1:02d}.csv"
        try:
            sidecar = make_sidecar(board_id=source.descr_board_id, board_name=source.board_name,
                                   sampling_rate=rate, channels=source.channels,
                                   timestamp_row=source.timestamp_row, package_num_row=source.package_num_row,
                                   marker_row=source.marker_row, subject=f"autocal-{stream}",
                                   start_time=stamp)
            self._rec = _Recorder(path, sidecar, int(source.num_rows))
        except Exception as exc:
            return [self._event("failed", stream, detail=f"cannot start the recording {path}: {exc}")]
        self.cycles += 1
        self.stream = stream
        self.state = RECORDING
        self.before, self.after = _Tally(), _Tally()
        self.old_version = int(self._version())
        self._rate = float(rate)
        self._states = set()
        self._rec_target = round(60 * self.config.minutes * rate)
        self._rec_limit = round(60 * self.config.longest * rate)
        return [self._event("recording", stream, file=str(path), seconds=60 * self.config.minutes,
                            max_seconds=60 * self.config.longest, min_states=self.config.min_states,
                            bridge=self.old_version)]

    def feed(self, stream: str, raw: Any) -> None:
        """Raw rows of a chunk the loop read (only the cycle's stream is recorded)."""
        rec = self._rec
        if self.state == RECORDING and stream == self.stream and rec is not None and raw is not None \
                and not rec.finished:
            # enough states seen: stop at the minutes; else record on, up to the longest
            cap = self._rec_target if len(self._states) >= self.config.min_states else self._rec_limit
            if rec.samples < cap:
                rec.feed(raw[:, : cap - rec.samples])
            if rec.samples >= cap:
                rec.finish()

    def paired(self, stream: str, version: int, agrees: bool, source_class: int | None = None) -> None:
        """One window's paired-watch verdict (and the source model's class, counted while recording)."""
        if stream != self.stream:
            return
        if self.state == RECORDING and version == self.old_version:
            self.before.add(agrees, source_class)
            if source_class is not None:
                self._states.add(int(source_class))
        elif self.state == EVALUATING and version == self.new_version:
            self.after.add(agrees, source_class)

    # --- once per hop ---------------------------------------------------------------------------------
    def tick(self) -> list[dict[str, Any]]:
        """Advance the cycle without waiting for anything; returns the events of the steps taken."""
        s = self.state
        if s == RECORDING and self._rec is not None and self._rec.finished and self._rec.done:
            return self._start_calibrate()
        if s in (CALIBRATING, ROLLING_BACK) and self._child is not None and self._child.poll() is not None:
            return self._child_done()
        v = int(self._version())
        if s == SWAPPING:
            if v != self.old_version:
                self.new_version = v
                self.state = EVALUATING
                return [self._event("swapped", bridge=v, previous=self.old_version)]
            if time.monotonic() - self._since > self.config.swap_timeout:
                return self._end("failed", detail=f"calibrate published a bridge but the live loop did not "
                                                  f"swap it in within {self.config.swap_timeout:g} s (see "
                                                  "the bridge events); keeping "
                                                  f"v{self.old_version:04d}")
        if s == EVALUATING:
            need = self.config.eval_windows or max(self.before.n, 1)
            if self.after.n >= need:
                return self._judge()
        if s == ROLLING_BACK and self._child is None and v == self.old_version:
            return self._end("rolled_back", bridge=v)
        return []

    def _start_calibrate(self) -> list[dict[str, Any]]:
        assert self._rec is not None
        if self._rec.error:
            return self._end("failed", detail=self._rec.error)
        self._report = self._rec.path.with_suffix(".report.json")
        extra = list(self.config.calibrate_args)
        if "--min-states" not in extra:
            extra += ["--min-states", str(self.config.min_states)]
        cmd = [sys.executable, "-m", "edge_bridge.cli", "calibrate", "--bundle", str(self.root), "--paired",
               str(self._rec.path), "--report", str(self._report), *extra]
        spawned = self._spawn(cmd, self._rec.path.with_suffix(".calibrate.log"))
        if spawned:
            return spawned
        self.state = CALIBRATING
        return [self._event("calibrating", file=str(self._rec.path), nice=self.config.nice,
                            pid=self._child.pid if self._child else None,
                            recorded_s=round(self._rec.samples / self._rate, 1) if self._rate else None,
                            source_states=len(self._states),
                            agreement_before=_r(self.before.rate), paired_windows_before=self.before.n)]

    def _spawn(self, cmd: list[str], log: Path) -> list[dict[str, Any]]:
        nice = self.config.nice
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        here = str(Path(__file__).resolve().parent.parent)  # the child imports the same edge-bridge
        env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
        try:
            self._log = open(log, "wb")  # noqa: SIM115 - closed when the child ends
            self._child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                           stderr=subprocess.STDOUT, env=env,
                                           preexec_fn=(lambda: os.nice(nice)) if nice else None)
        except OSError as exc:
            return self._end("failed", detail=f"cannot start {' '.join(cmd[:5])}: {exc}")
        logger.info("auto-calibrate: %s (pid %d, nice +%d)", " ".join(cmd[3:]), self._child.pid, nice)
        return []

    def _child_done(self) -> list[dict[str, Any]]:
        assert self._child is not None
        rc = self._child.returncode
        self._child = None
        if self._log is not None:
            self._log.close()
        tail = _tail(Path(self._log.name)) if self._log is not None else ""
        if self.state == ROLLING_BACK:
            if rc != 0:
                return self._end("failed", detail=f"calibrate --rollback exited {rc}: {tail}")
            self._since = time.monotonic()
            return []  # tick() reports rolled_back once the watcher has swapped back
        if rc != 0:
            return self._end("failed", detail=f"calibrate exited {rc} (nothing published): {tail}")
        report = _read_json(self._report)
        if not report.get("accepted") or not report.get("new_version"):
            verdict = report.get("verdict") or tail
            return self._end("not_published", report=str(self._report), detail=f"calibrate kept "
                             f"v{self.old_version:04d}: {verdict}")
        self.state = SWAPPING
        self._since = time.monotonic()
        return [self._event("published", report=str(self._report), version=int(report["new_version"]),
                            verdict=report.get("verdict"))]

    def _judge(self) -> list[dict[str, Any]]:
        measure, before, after = compare(self.before, self.after)
        figures = {"agreement_before": _r(before), "agreement_after": _r(after), "agreement": measure,
                   "paired_windows_before": self.before.n, "paired_windows_after": self.after.n,
                   "margin": self.config.margin}
        if before is not None and after is not None and after < before + self.config.margin:
            log = self.dir / f"rollback-{self.cycles:02d}.log"
            spawned = self._spawn([sys.executable, "-m", "edge_bridge.cli", "calibrate", "--bundle",
                                   str(self.root), "--rollback", str(self.old_version)], log)
            if spawned:
                return spawned
            self.state = ROLLING_BACK
            return [self._event("rolling_back", bridge=self.new_version, to=self.old_version, **figures)]
        return self._end("kept", bridge=self.new_version, **figures)

    def _end(self, step: str, **fields: Any) -> list[dict[str, Any]]:
        stream = self.stream
        self.state = IDLE
        return [self._event(step, stream, **fields)]

    def _event(self, step: str, stream: str | None = None, **fields: Any) -> dict[str, Any]:
        ev = {"event": "autocal", "step": step, "stream": stream or self.stream,
              "time": round(time.time(), 3), **fields}
        self.events.append(ev)
        logger.log(logging.WARNING if step in ("failed", "unavailable") else logging.INFO,
                   "auto-calibrate: %s %s", step, {k: v for k, v in fields.items() if k != "detail"}
                   if step not in ("failed", "unavailable") else fields.get("detail", ""))
        return ev

    # --- end --------------------------------------------------------------------------------------------
    def close(self) -> list[dict[str, Any]]:
        """The loop ends: finish the recording; a running child is stopped (calibrate publishes atomically,
        so a stopped child leaves the bundle as it was)."""
        out = []
        if self._rec is not None:
            self._rec.finish()
        if self._child is not None and self._child.poll() is None:
            self._child.terminate()
            try:
                self._child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            out.append(self._event("stopped", detail=f"the live loop ended while {self.state}; the child "
                                                     "was stopped, the bundle is as it was"))
            self._child = None
        if self._log is not None and not self._log.closed:
            self._log.close()
        return out

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "cycles": self.cycles,
                "steps": [f"{e['step']}" for e in self.events], "record_dir": str(self.dir)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _read_json(path: Path | None) -> dict[str, Any]:
    import json

    try:
        data = json.loads(Path(path).read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _tail(path: Path, n: int = 400) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " ".join(text[-n:].split())


__all__ = ["AutoCalibrateConfig", "AutoCalibrator"]
