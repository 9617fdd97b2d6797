"""Simulated paired recordings: the project's embedded default data (numpy and scipy only).

No public dataset can be downloaded where edge-bridge is built and tested, so the pipeline's default data
are simulated, with the physiology that model bridging relies on:

- ``stress`` (WESAD-like): ONE beat train drives the chest ECG and a wrist PPG pulse delayed by a
  per-subject pulse-transit time, so both give the same heart rate beat by beat; breathing modulates heart
  rate (RSA), PPG amplitude and ECG baseline; skin conductance has a tonic level and phasic responses.
  Baseline, stress and amusement blocks move heart rate, HRV, breathing, EDA and PPG amplitude.
- ``sleep`` (ISRUC-like): six EEG channels with stage-specific rhythms and graphoelements, and ECG whose
  heart rate falls in sleep, labelled wake/sleep per 30 s epoch.

Subjects differ strongly (resting heart rate, HRV, transit time, waveform shapes, noise levels), and the
usual artefacts are there (baseline wander, motion bursts, powerline, sensor noise, rare amplifier
saturation), so neither task is trivially separable across subjects.

Examples
--------
>>> from edge_bridge.simulate import simulate_subject, simulate_dataset
>>> rec = simulate_subject("stress", "S01", minutes=10, seed=0)
>>> paths = simulate_dataset("data", task="stress", subjects=10, minutes=10, seed=0)
"""

from edge_bridge.simulate.dataset import SimulationError, simulate_dataset, simulate_subject

__all__ = ["SimulationError", "simulate_dataset", "simulate_subject"]
