"""Pulses (adaptflow/runtime/pulses.py): short CPU probes taken during a recording or a run, read
only where no task ran; calibration keeps the recording's as the host's ``pulse``, and a run's
own over it is the speed ``--pulse-speed`` simulates the run at."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import yaml

from adaptflow.runtime.compare_app import RunTap, run_pulse
from adaptflow.runtime.pulses import MIN_IDLE_PULSES, PULSES_FILE, PulseSampler, idle_rate, read_pulses
from adaptflow.scenario import load_scenario, parse_scenario

from .test_probe import hosted


def test_only_the_pulses_no_task_overlapped_are_read():
    """Pulses at 0-10 s, one a second: those that touch a busy span (one ending inside a pulse,
    one beginning inside, one covering it, a task still running from 8.5 s) read 500 and are
    left out; the idle ones read 1,000. Fewer idle pulses than MIN_IDLE_PULSES read no rate."""
    pulses = np.array([[t, t + 0.025, 1000.0] for t in range(10)])
    busy = [(0.9, 1.01), (2.02, 2.5), (3.5, 4.5), (8.5, math.inf)]
    for touched in (1, 2, 4, 9):
        pulses[touched, 2] = 500.0
    assert idle_rate(np.tile(pulses, (4, 1)), busy) == (1000.0, 24)  # the same ten pulses, four times
    assert idle_rate(pulses, busy) == (None, 6)  # six idle: under MIN_IDLE_PULSES
    many = np.array([[t, t + 0.025, 700.0] for t in range(MIN_IDLE_PULSES)])
    assert idle_rate(many, []) == (700.0, MIN_IDLE_PULSES)  # no task at all: every pulse idle
    assert idle_rate(np.empty((0, 3)), busy) == (None, 0)


def test_a_pulses_file_skips_a_cut_short_last_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / PULSES_FILE
    assert read_pulses(path).shape == (0, 3)  # a recording from before pulses were kept
    path.write_text("[1.0, 1.025, 900.5]\n[2.0, 2.025, 880]\n[3.0, 3.0")
    assert read_pulses(path).tolist() == [[1.0, 1.025, 900.5], [2.0, 2.025, 880.0]]
    for bad in ("[2.0, 1.0, 880]", "[2.0, 2.025, 0]", '{"rate": 1}', "[2.0, 2.025]", "[2.0, 2.025, NaN]"):
        path.write_text(f"[1.0, 1.025, 900.5]\n{bad}\n[3.0, 3.025, 870]\n")
        with pytest.raises(ValueError, match=rf"{PULSES_FILE} line 2: .*expected \[start, end, rate\]"):
            read_pulses(path)


def test_the_sampler_pulses_from_its_own_process_until_the_block_ends(tmp_path):
    """A real sampler for two seconds: whole lines of positive rates, each pulse about
    PULSE_SECONDS long and within the block; none after it (its process is stopped)."""
    path = tmp_path / PULSES_FILE
    began = time.time()
    with PulseSampler(path, seed=3):
        time.sleep(2.5)  # a spawned process takes a moment to start
    ended = time.time()
    pulses = read_pulses(path)
    assert len(pulses) >= 1 and (pulses[:, 2] > 0).all()
    assert began <= pulses[0, 0] and pulses[-1, 1] <= ended
    assert ((pulses[:, 1] - pulses[:, 0]) < 1.0).all()
    time.sleep(1.6)  # longer than the longest pause: a sampler left running would have written again
    assert len(read_pulses(path)) == len(pulses)


def test_a_runs_pulse_leaves_out_the_pulses_beside_its_own_tasks():
    """compare-app's tap keeps attempts in seconds from the run's start and the pulses are in wall
    seconds: a pulse beside an attempt at 5.0-5.5 s of a run begun at 1,000 s is left out."""
    tap = RunTap(inner=None, origin=1000.0)
    tap.attempts = {"work": [(4.9, 5.0, 5.5, "work@vm")]}
    idle = [[1000.0 + t, 1000.0 + t + 0.025, 800.0] for t in range(10, 10 + MIN_IDLE_PULSES)]
    assert run_pulse(np.array([[1005.2, 1005.225, 1.0], *idle]), tap) == pytest.approx(800.0)
    assert run_pulse(np.array(idle[:-1]), tap) is None  # too few


def test_calibration_keeps_the_recordings_idle_pulses_as_the_hosts_pulse(tmp_path):
    """A pulse every half second of a synthetic recording reads 1,000 where no task ran
    (judged from the raw events here, not by the code under test) and 10 beside one: the host's
    ``pulse`` is exactly 1,000 (with a warning when nice'd work took 20 % of the machine while
    recording). Too few idle pulses write none and say so; a damaged line in pulses.jsonl is an
    error naming it."""
    from adaptflow.runtime.calibrate import calibrate

    from .test_calibrate import SyntheticApp, write_recording

    lines = SyntheticApp(seed=5, horizon=600.0, cpu={"parse": 1.0}, cores=1.0).run()
    folder = write_recording(tmp_path / "rec", lines)
    meta = json.loads((folder / "recording.json").read_text())
    (folder / "recording.json").write_text(json.dumps(meta | {"host": {"name": "box", "cores": 1}}))
    busy = _attempt_spans(lines)
    starts = meta["started"] + np.arange(0.0, 600.0, 0.5)
    rates = [10.0 if any(a < s + 0.025 and b > s for a, b in busy) else 1000.0 for s in starts]
    assert 50 < rates.count(1000.0) < len(rates) - 50  # both kinds, many of each
    (folder / PULSES_FILE).write_text(
        "".join(json.dumps([s, s + 0.025, r]) + "\n" for s, r in zip(starts, rates, strict=True))
    )
    kept = calibrate(folder, tmp_path / "kept.yaml", cores="box=1")
    assert load_scenario(kept.scenario).hosts["box"].pulse == pytest.approx(1000.0)
    assert kept.report["pulses"]["idle"] == rates.count(1000.0)
    assert not any("nice'd processes" in w for w in kept.report["warnings"])
    # recorded beside background work (the recorder keeps its nice share): the pulse is kept, and doubted
    (folder / "recording.json").write_text(json.dumps(meta | {"host": {"name": "box", "cores": 1}, "nice": 0.2}))
    beside = calibrate(folder, tmp_path / "beside.yaml", cores="box=1")
    assert load_scenario(beside.scenario).hosts["box"].pulse == pytest.approx(1000.0)
    assert any(w.startswith("nice'd processes took 20% of the machine's CPU while recording: hosts.box.pulse")
               for w in beside.report["warnings"]), beside.report["warnings"]  # fmt: skip

    idle_at = [s for s, r in zip(starts, rates, strict=True) if r == 1000.0][: MIN_IDLE_PULSES - 1]
    (folder / PULSES_FILE).write_text("".join(json.dumps([s, s + 0.025, 1000.0]) + "\n" for s in idle_at))
    few = calibrate(folder, tmp_path / "few.yaml", cores="box=1")
    assert load_scenario(few.scenario).hosts["box"].pulse is None
    assert any(f"fewer than {MIN_IDLE_PULSES}" in w for w in few.report["warnings"]), few.report["warnings"]
    (folder / PULSES_FILE).write_text("[1.0, 1.025, 900]\nnot json\n[2.0, 2.025, 900]\n")
    with pytest.raises(ValueError, match=f"{PULSES_FILE} line 2"):
        calibrate(folder, tmp_path / "bad.yaml", cores="box=1")


def _attempt_spans(lines: list[dict]) -> list[tuple[float, float]]:
    """Each attempt's (start, end) from raw Celery events: a start, then the success, retry or
    failure of the same task id."""
    opened, spans = {}, []
    for line in lines:
        if line["type"] == "task-started":
            opened[line["uuid"]] = line["timestamp"]
        elif line["type"] in ("task-succeeded", "task-retried", "task-failed") and line["uuid"] in opened:
            spans.append((opened.pop(line["uuid"]), line["timestamp"]))
    return spans + [(start, math.inf) for start in opened.values()]


# --pulse-speed in simulated_app_run and resimulate: tests/test_probe.py, beside --steal-speed


def test_a_run_pulses_into_its_recording_or_only_when_its_scenario_can_use_them(tmp_path):
    """compare-app's pulse file: a kept run's recording's ``pulses.jsonl``, emptied of a former
    run under the same label; with no recording, a temporary file removed after the run when a
    host has a pulse to compare with, and no pulses at all when none has."""
    from types import SimpleNamespace

    from adaptflow.runtime.compare_app import _pulse_file

    with_pulse = yaml.safe_load(hosted(tmp_path, probe=None).read_text())
    with_pulse["hosts"]["vm"]["pulse"] = 1000.0
    pulsed, plain = parse_scenario(with_pulse, base_dir=tmp_path), load_scenario(hosted(tmp_path, probe=None))
    kept = SimpleNamespace(out_dir=tmp_path / "run.recording")
    kept.out_dir.mkdir()
    (kept.out_dir / PULSES_FILE).write_text("[1.0, 1.025, 900]\n")  # a former run's
    with _pulse_file(kept, plain) as path:  # type: ignore[arg-type]
        assert path == kept.out_dir / PULSES_FILE and not path.exists()
    with _pulse_file(None, plain) as path:
        assert path is None
    with _pulse_file(None, pulsed) as path:
        assert path is not None and path.name == PULSES_FILE
        path.write_text("[1.0, 1.025, 900]\n")
    assert not path.exists()
