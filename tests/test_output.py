import os

import numpy as np
import pytest
import soundfile

from sonify import SonifyError, SonifyParameterError
from sonify.output import AudioFileWriter, _WavFile


@pytest.mark.parametrize(
    ("name", "fmt", "subtype"),
    [
        ("a.wav", "float", "FLOAT"),
        ("b.wav", "pcm16", "PCM_16"),
        ("c.flac", "float", "PCM_24"),
        ("d.flac", "pcm16", "PCM_16"),
    ],
)
def test_formats_read_back(tmp_path, name, fmt, subtype):
    samples = (0.1 * np.sin(np.arange(4410) / 7.0)).astype(np.float32)
    with AudioFileWriter(tmp_path / name, 44100, sample_format=fmt) as writer:
        writer.write(samples[:2000])
        writer.write(samples[2000:])
    info = soundfile.info(tmp_path / name)
    assert info.subtype == subtype and info.frames == 4410 and writer.duration == pytest.approx(0.1)
    back, _ = soundfile.read(tmp_path / name, dtype="float32")
    tolerance = 0 if subtype == "FLOAT" else 1e-4
    np.testing.assert_allclose(back, samples, atol=tolerance)


def test_float_wav_has_ieee_float_format_tag(tmp_path):
    with AudioFileWriter(tmp_path / "f.wav", 44100) as writer:
        writer.write(np.zeros(10, np.float32))
    header = (tmp_path / "f.wav").read_bytes()
    fmt = header.index(b"fmt ")
    assert int.from_bytes(header[fmt + 8 : fmt + 10], "little") in (3, 0xFFFE)
    if int.from_bytes(header[fmt + 8 : fmt + 10], "little") == 0xFFFE:  # extensible: the sub-format GUID says float
        assert header[fmt + 32 : fmt + 34] == b"\x03\x00"


def test_bad_paths(tmp_path):
    with pytest.raises(SonifyError, match=r"\.wav or \.flac"):
        AudioFileWriter(tmp_path / "x.mp3", 44100)
    (tmp_path / "file").write_text("")
    with pytest.raises(SonifyError, match="is a file, not a folder"):
        AudioFileWriter(tmp_path / "file" / "x.wav", 44100)
    with pytest.raises(SonifyError, match="sample format"):
        AudioFileWriter(tmp_path / "x.wav", 44100, sample_format="mp3")


READERS = ("soundfile", "scipy")


def read_with(reader, path):
    if reader == "soundfile":
        return soundfile.read(path, dtype="float32")[0]
    import scipy.io.wavfile

    return scipy.io.wavfile.read(path)[1]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(("fmt", "channels"), [("float", 1), ("pcm16", 2), ("pcm24", 1), ("pcm24", 2)])
def test_a_wav_is_readable_up_to_the_last_flush_without_close(tmp_path, reader, fmt, channels):
    samples = (0.3 * np.sin(np.arange(3001) / 5.0)).astype(np.float32)
    block = np.stack([samples, -samples], 1) if channels == 2 else samples
    writer = AudioFileWriter(tmp_path / "killed.wav", 44100, channels, fmt)
    writer.write(block)
    writer.flush()  # what a recorder does at every flush interval
    writer.write(block)  # ... and then the process is killed: no close, no final header
    assert len(read_with(reader, tmp_path / "killed.wav")) == len(samples)  # common readers, not only soundfile


@pytest.mark.parametrize("reader", READERS)
def test_a_wav_past_the_riff_limit_becomes_rf64_with_every_frame(tmp_path, monkeypatch, reader):
    # 4 GiB cannot be written in a test: the same code path with the limit lowered to 40 kB.
    monkeypatch.setattr(_WavFile, "riff_limit", 40_000)
    samples = (0.3 * np.sin(np.arange(25_000) / 5.0)).astype(np.float32)  # 100 kB of float samples
    with AudioFileWriter(tmp_path / "long.wav", 44100) as writer:
        writer.write(samples[:5000])
        writer.flush()
        assert (tmp_path / "long.wav").read_bytes()[:4] == b"RIFF"  # small so far: plain WAV
        writer.write(samples[5000:])
    assert (tmp_path / "long.wav").read_bytes()[:4] == b"RF64"
    assert soundfile.info(tmp_path / "long.wav").frames == len(samples)  # the length is never capped
    np.testing.assert_array_equal(read_with(reader, tmp_path / "long.wav"), samples)


def test_files_are_created_exclusively(tmp_path):
    (tmp_path / "taken.wav").write_bytes(b"another run")
    with pytest.raises(SonifyParameterError, match="already exists"):
        AudioFileWriter(tmp_path / "taken.wav", 44100)
    assert (tmp_path / "taken.wav").read_bytes() == b"another run"
    with AudioFileWriter(tmp_path / "taken.wav", 44100, overwrite=True) as writer:
        writer.write(np.zeros(10, np.float32))
    assert soundfile.info(tmp_path / "taken.wav").frames == 10


def test_a_write_cut_short_keeps_whole_frames(tmp_path):
    import subprocess
    import sys

    code = (
        "import resource, numpy as np; resource.setrlimit(resource.RLIMIT_FSIZE, (10_003, 10_003))\n"
        "from sonify.output import AudioFileWriter\n"
        "w = AudioFileWriter({!r}, 44100, 2, 'pcm24')\n"
        "try:\n    w.write(np.full((5000, 2), 0.25, np.float32))\n"
        "except OSError as e:\n    print(type(e).__name__, e)\n"
        "w.close()\n"
    ).format(str(tmp_path / "cut.wav"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.startswith("SonifyIOError") and "File too large" in result.stdout, result.stderr
    frames = soundfile.info(tmp_path / "cut.wav").frames
    assert 0 < frames < 5000 and len(read_with("scipy", tmp_path / "cut.wav")) == frames


@pytest.mark.parametrize("reader", READERS)
def test_a_wav_killed_before_its_first_flush_is_a_valid_empty_file(tmp_path, reader):
    writer = AudioFileWriter(tmp_path / "early.wav", 44100)
    writer.write(np.full(1000, 0.25, np.float32))  # samples on disk, but the header was never brought up to date
    assert len(read_with(reader, tmp_path / "early.wav")) == 0  # a valid, empty WAV: no reader refuses it
    writer.close()
    assert len(read_with(reader, tmp_path / "early.wav")) == 1000


def test_overwrite_replaces_a_link_and_never_writes_through_it(tmp_path):
    other_run = tmp_path / "run-5.wav"
    other_run.write_bytes(b"another run's audio")
    (tmp_path / "latest.wav").symlink_to(other_run)
    os.link(other_run, tmp_path / "hard.wav")
    for name in ("latest.wav", "hard.wav"):
        with AudioFileWriter(tmp_path / name, 44100, overwrite=True) as writer:
            writer.write(np.zeros(10, np.float32))
        assert not (tmp_path / name).is_symlink() and soundfile.info(tmp_path / name).frames == 10
    assert other_run.read_bytes() == b"another run's audio"
