"""The shared guards for hostile files: regular files only, capped reads, bounded JSON depth."""

from __future__ import annotations

import io
import json
import os
import time

import pytest

from audit.safeio import NotRegularFile, TooLarge, open_regular, read_capped, read_regular
from audit.safejson import TooDeep, depth, loads


def test_a_fifo_is_refused_at_once_instead_of_blocking(tmp_path):
    fifo = tmp_path / "a.txt"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(NotRegularFile, match="fifo"):
        open_regular(fifo)
    assert time.monotonic() - started < 1.0


def test_directories_devices_and_symlinks_on_request_are_refused(tmp_path):
    with pytest.raises(NotRegularFile, match="directory"):
        open_regular(tmp_path)
    with pytest.raises(NotRegularFile, match="device"):
        open_regular("/dev/zero")
    target = tmp_path / "t.bin"
    target.write_bytes(b"abc")
    link = tmp_path / "l.bin"
    link.symlink_to(target)
    assert open_regular(link).read() == b"abc"
    with pytest.raises(NotRegularFile, match="symbolic link"):
        open_regular(link, nofollow=True)


def test_a_regular_file_reads_normally_and_blocking(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"0123456789")
    with open_regular(p) as fh:
        assert fh.read() == b"0123456789"
    assert read_regular(p, 10) == b"0123456789"
    with pytest.raises(TooLarge):
        read_regular(p, 9)


def test_read_capped_stops_past_the_limit_on_a_stream_without_size():
    class Endless(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, b):
            b[:] = b"\0" * len(b)
            return len(b)

    with pytest.raises(TooLarge):
        read_capped(io.BufferedReader(Endless()), 5 << 20)
    assert read_capped(io.BytesIO(b"x" * 100), 100) == b"x" * 100


def _true_depth(obj) -> int:
    if isinstance(obj, list):
        return 1 + max([_true_depth(x) for x in obj] or [0])
    if isinstance(obj, dict):
        return 1 + max([_true_depth(x) for x in obj.values()] or [0])
    return 0


@pytest.mark.parametrize(
    "text",
    [
        "[[1,[2]]]",
        '{"a":"[[[["}',
        r'{"a":"\\"}',
        r'{"a":"\"[[["}',
        r'{"a":"\\\"[[[", "b":[[1]]}',
        "[]",
        "{}",
        '"x"',
        "1",
        '{"k": {"[": "]"}}',
    ],
)
def test_depth_matches_the_parsed_structure(text):
    assert depth(text) == _true_depth(json.loads(text))
    assert depth(text.encode()) == _true_depth(json.loads(text))


def test_deep_json_is_a_value_error_not_a_recursion_error():
    with pytest.raises(ValueError):
        loads("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TooDeep):
        loads(b'{"a":' * 50_000 + b"1" + b"}" * 50_000)
    assert loads('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}


def test_depth_is_linear_on_hostile_strings():
    started = time.monotonic()
    depth('"' + '\\"' * 500_000)
    depth("[" * 500_000)
    assert time.monotonic() - started < 2.0
