"""The live player and the file pipeline (sonify._pipelines), fed directly."""

import time

import numpy as np

import sonify
from helpers import is_alarm, spectral_peaks
from sonify._pipelines import LivePlayer, newest_keeping_alarms

SOUND = sonify.SoundSettings()


def test_newest_step_is_played_and_skipped_alarms_are_kept():
    ok = np.array([1.0, 2.0, 3.0])
    nan_in_middle = np.array([1.0, np.nan, 3.0])
    none = np.zeros(3, bool)
    batch = [(1, ok, none, 0.1), (2, nan_in_middle, none, 0.2), (3, ok * 2, none, 0.3)]
    step, norms, missing, when = newest_keeping_alarms(batch)
    assert (step, when) == (3, 0.3)
    np.testing.assert_array_equal(norms, [2.0, np.nan, 6.0])
    # a layer with no gradient in the newest step still sounds the alarm it had before
    step, norms, missing, _ = newest_keeping_alarms(
        [(1, nan_in_middle, none, 0), (2, ok, np.array([0, 1, 0], bool), 0)]
    )
    assert np.isnan(norms[1]) and not missing[1]


def test_training_faster_than_the_sound_is_followed_closely(sound_server):
    player = LivePlayer(SOUND.sounder(2), device="pulse")
    player.timeline = []
    with sound_server.capture() as recording:
        for step in range(1, 401):  # about 400 steps/s; the sound manages 25/s
            norms = np.array([0.01 * step, np.nan if step == 123 else 1.0])
            player.push(step, norms, np.zeros(2, bool), time.perf_counter())
            time.sleep(0.0025)
        report = player.close()
    assert report.played + report.skipped == 400
    assert 10 <= report.played < 100 and report.underruns == 0 and report.failure is None
    played_steps = [step for _, step, _ in player.timeline]
    assert played_steps == sorted(played_steps) and played_steps[-1] == 400
    # each played step was the newest one: nothing older than a few steps waited for the sound
    synth = SOUND.synthesizer(2)
    captured = recording.samples
    voiced = np.flatnonzero(captured)
    heard = captured[voiced[0] - 1 : voiced[-1] + synth.gap_samples]
    slots = [heard[i : i + synth.tone_samples] for i in range(0, len(heard) - synth.tone_samples, synth.tone_samples)]
    assert any(is_alarm(slot) for slot in slots), "the NaN at step 123 was not heard"


def test_a_spike_in_a_skipped_step_is_still_heard_live(sound_server):
    player = LivePlayer(SOUND.sounder(2), device="pulse")
    player.timeline = []
    rng = np.random.default_rng(3)
    with sound_server.capture() as recording:
        for step in range(1, 301):  # far faster than the sound: most steps are skipped live
            norms = np.exp(rng.normal(0, 0.1, 2))
            if step == 150:
                norms[0] *= 40
            player.push(step, norms, np.zeros(2, bool), time.perf_counter())
            time.sleep(0.002)
        report = player.close()
    assert report.skipped > 100
    synth = SOUND.synthesizer(2)
    captured = recording.samples
    voiced = np.flatnonzero(captured)
    heard = captured[voiced[0] - 1 : voiced[-1] + synth.gap_samples]
    slots = [heard[i : i + synth.tone_samples] for i in range(0, len(heard) - synth.tone_samples, synth.tone_samples)]
    harmonic = [
        peaks for peaks in (spectral_peaks(slot, SOUND.sample_rate, threshold=0.2) for slot in slots) if len(peaks) >= 2
    ]
    assert any(abs(peaks[1] / peaks[0] - 2) < 0.1 for peaks in harmonic), "the spike at step 150 was not heard"
