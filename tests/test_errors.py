"""errors.one_line: a library's error quoted inside our one-line messages, whatever its text."""

from __future__ import annotations

import pytest

from idenprof.errors import DownloadError, one_line


def test_one_line_keeps_the_first_line_and_names_the_type_of_a_silent_error():
    assert one_line(ValueError("bad header\n  at offset 12\n")) == "bad header"
    assert one_line(OSError()) == "OSError"
    assert one_line(KeyError("")) == "''"  # KeyError's str() quotes its key
    assert one_line(RuntimeError("  \n")) == "RuntimeError"
    assert one_line(ValueError("x" * 500)) == "x" * 200


def test_a_weights_download_failing_without_a_message_is_still_one_line(monkeypatch, tmp_path):
    """get_file can raise an Exception with an empty message; that used to end in IndexError."""
    import keras

    from idenprof.weights import fetch_imagenet_weights

    def failing_get_file(*args, **kwargs):
        raise Exception()  # noqa: TRY002 (what keras.utils.get_file raises)

    monkeypatch.setattr(keras.utils, "get_file", failing_get_file)
    with pytest.raises(DownloadError, match=r"^could not fetch ImageNet weights from .* \(Exception\); download"):
        fetch_imagenet_weights("resnet50", origin="http://127.0.0.1:9/x.h5", cache_dir=str(tmp_path))
