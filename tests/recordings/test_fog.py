"""The FOG reader on FilteredData task files written here in the dataset's own layout, and the fog task.

Files are real text files of 61 comma-separated columns (row index, time stamp, 25 EEG, 33 EMG/ACC/SC,
label), as the dataset's official processing scripts write them; nothing is mocked.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge_bridge.cli import main
from edge_bridge.errors import RecordingError, SpecError
from edge_bridge.recordings import Annotation, Channel, Recording, read_recording
from edge_bridge.recordings.dataset import read_labelled, recording_files
from edge_bridge.recordings.fog import N_COLUMNS, RATE, read_fog, subject_of
from edge_bridge.recordings.paired import modality_windows, windows_from_files
from edge_bridge.splits import split_subjects
from edge_bridge.tasks import FOG_EEG_CHANNELS, FOG_SOURCE_EEG, TASKS, Task

FOG = TASKS["fog"]
EMG = {"EMG-A": "col:27", "EMG-B": "col:28", "EMG-C": "col:30"}  # the fog task's three EMG places


def _table(seconds: float, fog: tuple[float, float] | None = None, seed: int = 0) -> np.ndarray:
    """Numeric columns 2-60 of a file: EEG ~ 10 uV noise + alpha, EMG-like noise, label 1 inside ``fog``."""
    n = round(seconds * RATE)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    eeg = 10 * rng.standard_normal((n, 25)) + 5 * np.sin(2 * np.pi * 10 * t)[:, None]
    other = 200 * rng.standard_normal((n, 33))
    label = np.zeros((n, 1))
    if fog is not None:
        label[round(fog[0] * RATE):round(fog[1] * RATE)] = 1
    return np.hstack([eeg, other, label])


def _write(path, table: np.ndarray, *, truncate_last: bool = False, blank_rows=(), drop_column: bool = False,
           label_blank=()):
    """Write ``table`` as a FilteredData file: index, time stamp, then the columns, one line per sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, row in enumerate(table):
        ms = 2 * k
        stamp = f"09:30:{26 + ms // 1000:02d}.{ms % 1000:03d}"
        fields = [str(k), stamp, *(f"{v:.4f}" for v in row[:-1]), str(int(row[-1]))]
        if k in blank_rows:  # pandas writes NaN as an empty field
            fields[2:-1] = [""] * (len(fields) - 3)
        if k in label_blank:
            fields[-1] = ""
        if drop_column:
            fields = fields[:-2] + fields[-1:]
        lines.append(",".join(fields))
    if truncate_last:
        lines[-1] = ",".join(lines[-1].split(",")[:20])
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_eeg_mapped_columns_labels_and_subject(tmp_path):
    table = _table(12, fog=(4.0, 9.0))
    path = _write(tmp_path / "FilteredData" / "003" / "task_2.txt", table)
    rec = read_fog(path, {"col:27": "emg", "col:59": "eda"})
    assert rec.subject == "003" and rec.meta["task"] == 2
    assert rec.channel_names == [*FOG_EEG_CHANNELS, "col:27", "col:59"]
    assert {c.rate for c in rec.channels} == {500.0}
    # column 2 is FP1, column 26 is CP6, column 27 the first EMG, 59 the last before the label
    np.testing.assert_allclose(rec.channel("FP1").data, table[:, 0], atol=1e-4)
    np.testing.assert_allclose(rec.channel("CP6").data, table[:, 24], atol=1e-4)
    np.testing.assert_allclose(rec.channel("col:27").data, table[:, 25], atol=1e-4)
    np.testing.assert_allclose(rec.channel("col:59").data, table[:, 57], atol=1e-4)
    assert rec.channel("col:27").modality == "emg" and rec.channel("col:59").modality == "eda"
    assert rec.annotations == [Annotation(0.0, 4.0, "no-fog"), Annotation(4.0, 5.0, "fog"),
                               Annotation(9.0, 3.0, "no-fog")]


def test_without_a_map_only_eeg_and_labels_are_read(tmp_path):
    path = _write(tmp_path / "001" / "task_1.txt", _table(4))
    rec = read_recording(path)  # the suffix table picks the FOG reader (what `inspect` uses)
    assert rec.channel_names == list(FOG_EEG_CHANNELS) and rec.labels == ["no-fog"]


@pytest.mark.parametrize(("name", "subject"), [("S07_task_3.txt", "S07"), ("012-task2.txt", "012"),
                                               ("task_1.txt", "004")])
def test_subject_comes_from_the_name_else_the_folder(tmp_path, name, subject):
    assert subject_of(tmp_path / "004" / name) == subject


def test_wrong_column_count_is_refused_with_file_and_counts(tmp_path):
    path = _write(tmp_path / "001" / "task_1.txt", _table(2), drop_column=True)
    with pytest.raises(RecordingError, match=rf"task_1.txt: {N_COLUMNS - 1} columns, expected {N_COLUMNS}"):
        read_fog(path)


def test_damaged_middle_line_is_refused_with_its_line(tmp_path):
    path = _write(tmp_path / "001" / "task_1.txt", _table(2))
    lines = path.read_text().splitlines()
    lines[10] = ",".join(lines[10].split(",")[:30])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError, match=r"line 11: 30 columns, expected 61"):
        read_fog(path)


def test_truncated_last_line_is_dropped_with_a_warning(tmp_path, caplog):
    table = _table(2)
    path = _write(tmp_path / "001" / "task_1.txt", table, truncate_last=True)
    with caplog.at_level(logging.WARNING, logger="edge_bridge.recordings.fog"):
        rec = read_fog(path)
    assert len(rec.channel("FP1").data) == len(table) - 1
    assert "cut short" in caplog.text
    np.testing.assert_allclose(rec.channel("FP1").data, table[:-1, 0], atol=1e-4)


def test_label_other_than_0_or_1_is_refused(tmp_path):
    table = _table(2)
    table[100, -1] = 2
    path = _write(tmp_path / "001" / "task_1.txt", table)
    with pytest.raises(RecordingError, match=r"line 101: label \(column 60\) is 2"):
        read_fog(path)


def test_non_numeric_value_is_refused(tmp_path):
    path = _write(tmp_path / "001" / "task_1.txt", _table(2))
    text = path.read_text().split("\n")
    fields = text[5].split(",")
    fields[4] = "abc"
    text[5] = ",".join(fields)
    path.write_text("\n".join(text))
    with pytest.raises(RecordingError, match=r"task_1\.txt: not a FOG FilteredData file"):
        read_fog(path)


def test_nan_rows_are_kept_as_nan_and_left_out_by_the_quality_gate(tmp_path):
    table = _table(10)
    # rows 2.2 s - 2.4 s empty (NaN): the windows [0,3), [1,4), [2,5) hold them, the rest do not
    blank = range(round(2.2 * RATE), round(2.4 * RATE))
    path = _write(tmp_path / "001" / "task_1.txt", table, blank_rows=blank, label_blank=blank)
    rec = read_labelled(path, EMG, [FOG.source, FOG.target])
    assert rec.meta["rows_with_nan"] == len(blank)
    assert np.isnan(rec.channel("FP1").data[blank.start])
    assert np.isnan(rec.channel("col:27").data[blank.start])
    # the NaN labels leave a hole between two no-fog annotations
    assert [(a.onset, a.duration, a.label) for a in rec.annotations] == [(0.0, 2.2, "no-fog"),
                                                                         (2.4, 7.6, "no-fog")]
    w = windows_from_files([path], FOG.source, FOG.target, FOG.classes, channel_map=EMG,
                           min_label_fraction=FOG.min_label_fraction)
    assert w.skipped_reasons == {"quality": 3}
    np.testing.assert_allclose(w.starts, [3, 4, 5, 6, 7])
    assert np.isfinite(w.x["source"]).all() and np.isfinite(w.x["target"]).all()


def test_a_fog_task_without_an_emg_map_says_how_to_map_it(tmp_path):
    path = _write(tmp_path / "001" / "task_1.txt", _table(4))
    how = r"read only when you name them: --channels EMG-A=col:NN,EMG-B=col:NN,EMG-C=col:NN"
    with pytest.raises(RecordingError, match=how):
        windows_from_files([path], FOG.source, FOG.target, FOG.classes)


@pytest.mark.parametrize(("ref", "match"), [
    ("EMG1", r"no such channel.*col:NN"),
    ("col:60", "is the FOG label"),
    ("col:1", "is the time stamp"),
    ("col:5", "column 5 is EEG, read as F4"),
    ("col:99", "is not a column"),
])
def test_bad_column_references_are_refused(tmp_path, ref, match):
    path = _write(tmp_path / "001" / "task_1.txt", _table(2))
    with pytest.raises(RecordingError, match=match):
        read_fog(path, {ref: "emg"})


def test_folder_detection_finds_task_files_one_level_down_only(tmp_path):
    root = tmp_path / "FilteredData"
    a = _write(root / "001" / "task_1.txt", _table(4, seed=1))
    b = _write(root / "002" / "task_2.txt", _table(4, seed=2))
    (root / "002" / "notes.txt").write_text("patient walked twice\n")
    (root / "003").mkdir()
    (root / "003" / "3_1.txt").write_text("0\n1\n")  # an ISRUC scorer file is no recording
    assert recording_files(root) == [a, b]


def test_windows_and_splits_are_by_patient(tmp_path):
    root = tmp_path / "FilteredData"
    paths = [_write(root / f"{s:03d}" / f"task_{k}.txt", _table(5, seed=10 * s + k))
             for s in range(1, 6) for k in (1, 2)]
    w = windows_from_files(paths, FOG.source, FOG.target, FOG.classes, channel_map=EMG)
    assert sorted(set(w.subjects)) == ["001", "002", "003", "004", "005"]
    assert (w.subjects == "003").sum() == 2 * 3  # two tasks of one patient, three 3 s windows each
    split = split_subjects(np.unique(w.subjects).tolist(), seed=0)
    roles = {s: r for r, subjects in split.items() for s in subjects}
    assert len(roles) == 5  # every patient, with all of its task files, in exactly one role


def test_inspect_reads_a_fog_file(tmp_path, capsys):
    path = _write(tmp_path / "001" / "task_1.txt", _table(4, fog=(1.0, 2.0)))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "subject 001" in out and "CP6" in out and "label 'fog': 1 segment(s), 1 s" in out


# --- the fog task and the majority label ----------------------------------------------------------------
def test_fog_task_specs():
    assert FOG.classes == ("no-fog", "fog") and FOG.min_label_fraction == 0.8
    assert FOG.source.modality == "eeg" and set(FOG_SOURCE_EEG) <= set(FOG_EEG_CHANNELS)
    # the shapes the fog_eeg2emg preset's published LaBraM (6 x 600) and NormWear (3 x 390) configs take
    assert FOG.source.input_shape == (6, 600) and FOG.target.input_shape == (3, 390)
    assert FOG.source.output_rate == 200 and FOG.target.modality == "emg" and FOG.target.output_rate == 130
    for spec in (FOG.source, FOG.target):
        assert spec.window_s == 3 and spec.input_rate == 500
        assert spec.bandpass[1] < spec.output_rate / 2  # the band survives the resampling
    assert all(t.min_label_fraction == 1.0 for name, t in TASKS.items() if name != "fog")


@pytest.mark.parametrize("fraction", [0.5, 0.3, 1.2])
def test_min_label_fraction_must_be_a_majority(fraction):
    with pytest.raises(SpecError, match="min_label_fraction must be in"):
        Task("x", FOG.source, FOG.target, FOG.classes, min_label_fraction=fraction)


def _labelled(fog: tuple[float, float]) -> Recording:
    rng = np.random.default_rng(0)
    return Recording([Channel(name, rng.standard_normal(round(12 * RATE)), RATE, "emg")
                      for name in FOG.target.channels],
                     [Annotation(0, fog[0], "no-fog"), Annotation(fog[0], fog[1] - fog[0], "fog"),
                      Annotation(fog[1], 12 - fog[1], "no-fog")], subject="001")


def test_majority_label_keeps_windows_covered_at_least_80_percent():
    rec = _labelled((4.5, 8.4))
    w = modality_windows(rec, FOG.target, FOG.classes, min_label_fraction=0.8)
    # [1,4) pure no-fog; [2,5) no-fog 2.5/3 = 83 %; [3,6) 50/50; [4,7) fog 2.5/3 = 83 %; [5,8) pure fog;
    # [6,9) fog 2.4/3 = 80 % exactly; [7,10) fog 1.4/3 = 47 %, no-fog 53 %; [8,11) no-fog 2.6/3 = 87 %
    assert w.labels.tolist() == [0, 0, 0, -1, 1, 1, 1, -1, 0, 0]
    # the same windows under the pure rule (the default): only the unmixed ones keep a label
    pure = modality_windows(rec, FOG.target, FOG.classes)
    assert pure.labels.tolist() == [0, 0, -1, -1, -1, 1, -1, -1, -1, 0]
    np.testing.assert_array_equal(pure.x["emg"], w.x["emg"])


def test_fraction_1_is_the_pure_rule_bit_for_bit():
    rec = _labelled((4.5, 8.4))
    for t in np.arange(0, 9.5, 0.25):
        pure = rec.label_at(t, t + 3, FOG.classes)
        assert rec.label_at(t, t + 3, FOG.classes, min_fraction=1.0) == pure
        # majority at 0.999... still requires (almost) the whole window: it agrees with the pure rule
        assert rec._majority_label(t, t + 3, FOG.classes, None, 0.999999) == pure


def test_majority_counts_overlapping_annotations_once_and_maps_labels():
    rec = Recording([Channel("EMG", np.zeros(1500), RATE, "emg")],
                    [Annotation(0, 2, "freeze"), Annotation(0.5, 1.5, "freeze"), Annotation(2, 1, "walk")])
    lmap = {"freeze": "fog", "walk": "no-fog"}
    assert rec.label_at(0, 3, FOG.classes, lmap, min_fraction=0.8) == -1  # fog 2 s of 3, not 3.5
    assert rec.label_at(0, 2.4, FOG.classes, lmap, min_fraction=0.8) == 1  # fog 2 s of 2.4 = 83 %
    with pytest.raises(RecordingError, match=r"min_fraction must be in \(0.5, 1\]"):
        rec.label_at(0, 3, FOG.classes, lmap, min_fraction=0.4)


def test_a_run_reads_fog_folders_with_the_tasks_majority_rule(tmp_path):
    from edge_bridge.runs import Run

    root = tmp_path / "FilteredData"
    for s in range(1, 5):
        _write(root / f"{s:03d}" / "task_1.txt", _table(8, fog=(2.5, 6.0), seed=s))
    run = Run.open(tmp_path / "run", data=root, task="fog", channels="EMG-A=col:27,EMG-B=col:28,EMG-C=col:30")
    w = run.windows()
    one = w.by_subjects(["002"])
    # [0,3) no-fog 2.5/3 = 83 % -> no-fog; [1,4) fog 1.5/3 -> none; [2,5) fog 2.5/3 -> fog; [3,6) pure fog;
    # [4,7) fog 2/3 -> none; [5,8) no-fog 2/3 -> none: the task's 80 % rule, not the pure one (0 pure no-fog)
    assert one.labels.tolist() == [0, -1, 1, 1, -1, -1]
    assert sorted(s for role in run.splits().values() for s in role) == ["001", "002", "003", "004"]
