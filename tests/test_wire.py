"""Length-framed messages over pipes: frames arrive whole and in order, however the pipe cuts them.

The pipes here are shrunk to one page, so frames larger than a pipe, and a
writer that must wait for its reader, are the rule rather than the exception.
"""

from __future__ import annotations

import fcntl
import os
import select
import threading
from collections.abc import Iterator

import pytest

from helpers import TIMEOUT
from workcrew._backends import _wire

PAGE = 4096
FRAMES = [
    (_wire.RESULT, [b"", b""]),  # empty parts
    (_wire.READY, [b"x"]),
    (_wire.RESULT, [b"a" * 3 * PAGE, b"", b"b" * 17]),  # larger than the pipe
    (_wire.LOG, [bytes(range(256)) * 40]),
    (_wire.CHUNK, [b""]),
] + [(_wire.RESULT, [b"%d" % i, b"-" * (i * 97)]) for i in range(60)]


def whole(frames: list[tuple[int, list[bytes]]]) -> list[tuple[int, bytes]]:
    """What a reader must get: each frame's tag and its parts joined."""
    return [(tag, b"".join(parts)) for tag, parts in frames]


def joined(thread: threading.Thread) -> None:
    thread.join(TIMEOUT)
    assert not thread.is_alive(), f"{thread.name} did not end"


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PAGE)
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


def test_a_blocking_writer_s_frames_reach_a_non_blocking_reader_whole(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    os.set_blocking(read_end, False)

    def write_all() -> None:
        for tag, parts in FRAMES:
            _wire.write_frame(write_end, tag, *parts)
        os.close(write_end)

    writer = threading.Thread(target=write_all, daemon=True)
    writer.start()
    reader = _wire.FrameReader(read_end)
    got: list[tuple[int, bytes]] = []
    eof = False
    while not eof:
        assert select.select([read_end], [], [], TIMEOUT)[0], "the writer stalled"
        frames, eof = reader.read()
        got.extend(frames)
    joined(writer)
    assert got == whole(FRAMES)


def test_a_non_blocking_writer_keeps_what_the_pipe_refuses_and_sends_it_in_order(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    os.set_blocking(write_end, False)
    writer = _wire.FrameWriter(write_end)
    for tag, parts in FRAMES:
        writer.send(tag, b"".join(parts))
    assert writer.pending  # one page took only the first frames
    got: list[tuple[int, bytearray] | None] = []

    def read_all() -> None:
        for _ in FRAMES:
            got.append(_wire.read_frame(read_end))

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    while writer.pending:
        assert select.select([], [write_end], [], TIMEOUT)[1], "the reader stalled"
        writer.flush()
    joined(reader)
    assert got == whole(FRAMES)


def test_writing_to_a_pipe_whose_reader_is_gone_raises_broken_pipe(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    os.close(read_end)
    os.set_blocking(write_end, False)
    writer = _wire.FrameWriter(write_end)
    with pytest.raises(BrokenPipeError):
        writer.send(_wire.STOP, b"")


def test_short_writes_anywhere_in_a_frame_lose_and_repeat_nothing(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pipe writes a frame in one go here; the kernel may stop anywhere (a
    # signal, a full pipe): inside the header, at an empty part, mid-part.
    read_end, write_end = pipe
    real = os.writev
    cuts = iter([3, 9, 1, 0, 5, 4096, 2])

    def short(fd: int, buffers: list[memoryview]) -> int:
        limit = next(cuts, None)
        if limit is None:
            return real(fd, buffers)
        joined = b"".join(bytes(b) for b in buffers)[: max(limit, 1)]
        return os.write(fd, joined)

    monkeypatch.setattr(os, "writev", short)
    frames = [(_wire.RESULT, [b"ab", b"", b"cdefgh" * 1000]), (_wire.READY, [b"", b"z"])]
    got: list[tuple[int, bytearray] | None] = []
    reader = threading.Thread(
        target=lambda: got.extend(_wire.read_frame(read_end) for _ in frames), daemon=True
    )
    reader.start()
    for tag, parts in frames:
        _wire.write_frame(write_end, tag, *parts)
    joined(reader)
    assert got == whole(frames)
