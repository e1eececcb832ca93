"""sonify's own TensorBoard event records: the checksums TensorBoard's reader checks, computed fast."""

import os

import pytest

from sonify._tfevents import crc32c, masked_crc32c


@pytest.mark.parametrize("length", [0, 1, 7, 1023, 1024, 1025, 4096 + 17, 300_001])
def test_crc32c_matches_tensorboards_own(length):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    data = os.urandom(length)
    assert masked_crc32c(data) == reference(data)


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
