import numpy as np
import pytest
import soundfile

from sonify import SonifyError
from sonify.output import AudioFileWriter


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
