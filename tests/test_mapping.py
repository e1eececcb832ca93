import numpy as np
import pytest

from sonify import SonifyError
from sonify.mapping import LinearMap, LogMap, get_map, quantize


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
