import numpy as np
import pytest

from sonify import SonifyError
from sonify.mapping import LinearMap, LogMap, RelativeMap, get_map, quantize


def test_linear_is_the_reference_formula():
    norms = np.array([0.0, 0.37, 1.0, 12.5])
    np.testing.assert_allclose(get_map("linear")(norms), 200 + 100 * norms)


def test_log_default_keeps_extremes_audible_and_ordered():
    freqs = get_map("log")(np.array([1e-4, 1e-2, 1.0, 1e2, 1e4]))
    ratios = freqs[1:] / freqs[:-1]
    np.testing.assert_allclose(ratios, ratios[0])  # equal norm ratios -> equal intervals
    assert 12 * np.log2(ratios[0]) >= 6  # two decades apart is at least a tritone


def test_every_default_tone_has_a_pitch_and_small_changes_are_heard():
    from sonify import SoundSettings

    synth = SoundSettings().synthesizer(4)
    norms = np.geomspace(1e-12, 1e12, 2001)  # far beyond the range at both ends: clamped
    freqs = get_map("log")(norms)
    cycles = freqs * synth.tone_samples / synth.sample_rate
    assert cycles.min() >= 4  # at least 4 periods in every 10 ms tone: a pitch, not a click
    inside = np.geomspace(1e-4, 1e4 / 1.1, 500)
    cents = 1200 * np.log2(get_map("log")(inside * 1.1) / get_map("log")(inside))
    assert cents.min() >= 5  # a 10% change of a norm moves the pitch by at least 5 cents
    real = get_map("log")(np.array([1e-3, 1e3]))  # what real runs produce, from tiny biases to explosions
    assert real[0] >= 500 and real[1] <= 4000  # where the ear tells short tones apart best


def test_log_clamps_outside_range_and_handles_zero():
    pitch_map = LogMap(norm_range=(0.01, 100.0), freq_range=(200.0, 3200.0))
    freqs = pitch_map(np.array([0.0, 1e-9, 0.01, 100.0, 1e30]))
    np.testing.assert_allclose(freqs, [200, 200, 200, 3200, 3200])


def test_nonfinite_norms_map_to_nan_never_to_a_pitch():
    for preset in ("log", "linear"):
        freqs = get_map(preset)(np.array([np.nan, np.inf, -np.inf, 1.0]))
        assert np.isnan(freqs[:3]).all() and np.isfinite(freqs[3])


def test_quantize_snaps_to_scale_notes():
    snapped = quantize(np.array([450.0, 500.0, 700.0]), "major", tonic=440.0)
    semitones = np.round(12 * np.log2(snapped / 440.0)) % 12
    assert set(semitones.astype(int)) <= {0, 2, 4, 5, 7, 9, 11}
    np.testing.assert_allclose(12 * np.log2(snapped / 440.0), np.round(12 * np.log2(snapped / 440.0)), atol=1e-9)


def test_fit_stretches_over_the_run_and_widens_flat_runs():
    fitted = LogMap().fit(np.array([0.5, 2.0, 8.0, np.nan, 0.0]))
    assert fitted.norm_range == (0.5, 8.0)
    flat = LogMap().fit(np.array([1.0, 1.1]))
    assert flat.norm_range[1] / flat.norm_range[0] == pytest.approx(10.0)


def test_bad_settings_give_clear_errors():
    with pytest.raises(SonifyError, match="unknown mapping"):
        get_map("cubic")
    with pytest.raises(SonifyError, match="norm range"):
        LogMap(norm_range=(1.0, 0.1))
    with pytest.raises(SonifyError, match="'log' mapping only"):
        get_map("linear", norm_range=(1, 2))
    with pytest.raises(SonifyError, match="unknown scale"):
        get_map("log", scale="blues")
    assert isinstance(get_map(LinearMap(offset=100)), LinearMap)


def drifting_run(steps=500, seed=3):
    """Three layers: one that creeps up 3x over the run, two steady ones (3% noise), at very different scales."""
    rng = np.random.default_rng(seed)
    noise = np.exp(rng.normal(0, 0.03, (steps, 3)))
    return (
        np.column_stack([3.0 ** (np.arange(steps) / (steps - 1)) * 0.02, np.full(steps, 5.0), np.full(steps, 1e-3)])
        * noise
    )


def test_relative_map_hears_a_slow_drift_and_keeps_steady_layers_home(tmp_path):
    import soundfile

    import sonify
    from helpers import decode_tones

    norms = drifting_run()
    sound = sonify.SoundSettings(mapping="relative")
    sonify.render(norms, tmp_path / "drift.wav", sound=sound)
    audio, rate = soundfile.read(tmp_path / "drift.wav", dtype="float32")
    synth = sound.synthesizer(3)
    heard = decode_tones(audio, rate, 3, synth.tone_samples, synth.gap_samples)  # from the audio alone
    semitones = 12 * np.log2(heard / RelativeMap().home_freq)  # from home
    assert np.median(semitones[-10:, 0]) >= 5.0  # 3x over 500 steps: 5.6 semitones up, an octave per decade
    assert np.abs(semitones[:, 1:]).max() <= 1.0  # steady layers stay within a semitone of home
    assert np.abs(semitones[:20, 0]).max() <= 1.0  # and the drifting one starts there
    # The absolute log map hears the same drift as under 2 semitones.
    log_freqs = get_map("log")(norms[[0, -1], 0])
    assert 12 * np.log2(log_freqs[1] / log_freqs[0]) < 2.5


def test_relative_homes_are_the_median_of_the_first_finite_nonzero_steps():
    homes = RelativeMap(reference_steps=5).homes(2)
    norms = np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 100.0], [4.0, 1.0], [8.0, 1.0], [1.0, 1.0], [16.0, 50.0]])
    missing = np.zeros(norms.shape, bool)
    reference = homes.update(norms[:4], missing[:4])
    assert np.isnan(reference[0, 0]) and reference[2, 0] == 2.0 and reference[3, 0] == 3.0
    reference = homes.update(norms[4:], missing[4:])
    assert reference[-1].tolist() == [4.0, 1.0]  # 2, 4, 8, 1, 16 -> 4; the spike of 100 did not move home
    assert homes.settled
    np.testing.assert_allclose(RelativeMap().off_scale(np.array([40.0, 1.0, 0.02]), np.array([1.0])), [1, 0, -1])


def test_live_skipped_steps_still_teach_the_homes():
    import sonify

    heard = sonify.SoundSettings(mapping="relative").sounder(1)
    heard.pass_over(np.array([[4.0], [4.0], [4.0]]), np.zeros((3, 1), bool))
    freq = heard.score(np.array([[4.0]]), np.zeros((1, 1), bool)).frequency[0, 0]
    assert freq == pytest.approx(RelativeMap().home_freq)  # home is 4, learnt from the steps passed over


def test_relative_map_settings_are_checked():
    with pytest.raises(SonifyError, match="reference_steps"):
        RelativeMap(reference_steps=0)
    with pytest.raises(SonifyError, match="semitones per decade"):
        RelativeMap(semitones_per_decade=-1)
    with pytest.raises(SonifyError, match="'log' mapping only"):
        get_map("relative", norm_range=(1, 2))
