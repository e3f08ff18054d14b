"""Unit tests of the decoding of worker messages off the master thread (no processes)."""

from __future__ import annotations

import copyreg
import pickle
import queue
import threading
from collections.abc import Callable, Iterator

import pytest

from helpers import TIMEOUT
from workcrew._backends._decoding import (
    INLINE_LIMIT,
    Decoders,
    InOrder,
    NeedsDecoder,
    loads_plain,
    needs_decoder,
)
from workcrew._core._backend import Loop


class FakeLoop(Loop):
    """A master loop reduced to its inbox; the test thread plays the master thread."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[Callable[[], None]] = queue.Queue()

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        raise NotImplementedError

    def remove_reader(self, fd: int) -> None:
        raise NotImplementedError

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        raise NotImplementedError

    def remove_writer(self, fd: int) -> None:
        raise NotImplementedError

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        self.inbox.put(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        raise NotImplementedError

    def run_one(self) -> None:
        """Run the next callback posted from a decoder thread (waits for it)."""
        self.inbox.get(timeout=TIMEOUT)()


@pytest.fixture
def decoders() -> Iterator[Decoders]:
    pool = Decoders()
    yield pool
    pool.close()


def message(
    name: str, log: list[str], gate: threading.Event | None = None
) -> Callable[[], Callable[[], None]]:
    """A decode that (optionally) waits for ``gate`` and reports ``name`` into ``log``."""

    def decode() -> Callable[[], None]:
        if gate is not None:
            assert gate.wait(TIMEOUT), f"{name}: gate never opened"
        return lambda: log.append(name)

    return decode


def test_a_cheap_message_with_nothing_ahead_is_reported_at_once(decoders: Decoders) -> None:
    loop, log = FakeLoop(), []
    order = InOrder(loop, decoders)
    order.add(message("a", log), offload=False, answer=True)
    assert log == ["a"]
    assert order.idle and order.answers == 0
    assert loop.inbox.empty()


def test_messages_behind_an_offloaded_one_wait_for_it(decoders: Decoders) -> None:
    loop, log = FakeLoop(), []
    order = InOrder(loop, decoders)
    gate = threading.Event()
    order.add(message("slow", log, gate), offload=True, answer=True)
    order.add(message("cheap", log), offload=False, answer=False)
    order.add(message("answer", log), offload=False, answer=True)
    # Nothing may overtake the message still being decoded.
    assert log == []
    assert not order.idle
    assert order.answers == 2
    gate.set()
    loop.run_one()
    assert log == ["slow", "cheap", "answer"]
    assert order.idle and order.answers == 0


def test_when_idle_waits_until_every_message_so_far_is_reported(decoders: Decoders) -> None:
    loop, log = FakeLoop(), []
    order = InOrder(loop, decoders)
    gate = threading.Event()
    order.add(message("result", log, gate), offload=True, answer=True)
    order.when_idle(lambda: log.append("exit"))
    assert log == []
    gate.set()
    loop.run_one()
    assert log == ["result", "exit"]


def test_when_idle_runs_at_once_when_nothing_is_pending(decoders: Decoders) -> None:
    log: list[str] = []
    InOrder(FakeLoop(), decoders).when_idle(lambda: log.append("exit"))
    assert log == ["exit"]


def test_one_worker_s_slow_decode_does_not_hold_back_another_worker(decoders: Decoders) -> None:
    loop, log = FakeLoop(), []
    stuck, free = InOrder(loop, decoders), InOrder(loop, decoders)
    gate = threading.Event()
    stuck.add(message("stuck", log, gate), offload=True, answer=True)
    free.add(message("free", log), offload=True, answer=True)
    loop.run_one()  # only the free worker's decode can finish while the gate is shut
    assert log == ["free"]
    assert free.idle and not stuck.idle
    gate.set()
    loop.run_one()
    assert log == ["free", "stuck"]


def test_two_offloaded_messages_of_one_worker_keep_their_order(decoders: Decoders) -> None:
    loop, log = FakeLoop(), []
    order = InOrder(loop, decoders)
    first, second = threading.Event(), threading.Event()
    order.add(message("first", log, first), offload=True)
    order.add(message("second", log, second), offload=True)
    second.set()  # the second may not even start before the first is reported
    first.set()
    loop.run_one()
    loop.run_one()
    assert log == ["first", "second"]


def test_a_decode_that_raises_is_raised_on_the_master_thread_and_strands_nothing(
    decoders: Decoders,
) -> None:
    loop, log = FakeLoop(), []
    order = InOrder(loop, decoders)

    def broken() -> Callable[[], None]:
        raise LookupError("decoder bug")

    order.add(broken, offload=True, answer=True)
    order.add(message("after", log), offload=False)
    with pytest.raises(LookupError, match="decoder bug"):
        loop.run_one()
    assert log == ["after"]
    assert order.idle and order.answers == 0


def test_close_ends_every_decoder_thread() -> None:
    pool, loop, log = Decoders(), FakeLoop(), []
    gates = [threading.Event() for _ in range(3)]
    orders = [InOrder(loop, pool) for _ in gates]
    for n, (order, gate) in enumerate(zip(orders, gates, strict=True)):
        order.add(message(str(n), log, gate), offload=True)
    decoders = [t for t in threading.enumerate() if t.name.startswith("workcrew-decoder-")]
    assert len(decoders) == 3  # three decodes at once: none waited for another
    for gate in gates:
        gate.set()
    for _ in gates:
        loop.run_one()
    assert sorted(log) == ["0", "1", "2"]
    pool.close()
    assert not any(t.is_alive() for t in decoders)


class WithState:
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize(
    ("value", "offload"),
    [
        pytest.param(42, False, id="int"),
        pytest.param([1, "two", 3.0, None, b"four"], False, id="builtins"),
        pytest.param({"k": (1, 2)}, False, id="dict"),
        pytest.param(WithState(), True, id="instance"),
        pytest.param(ValueError("boom"), True, id="exception"),
        pytest.param(b"x" * (INLINE_LIMIT + 1), True, id="large"),
    ],
)
def test_needs_decoder_offloads_what_may_run_code_or_is_large(value: object, offload: bool) -> None:
    header = b"\x00\x01"
    assert needs_decoder(header + pickle.dumps(value, protocol=5), len(header)) is offload


#: Built-in data whose pickles hold the bytes of a global's opcode (0x93 = 147), which
#: the byte scan takes for code: loads_plain reads them on the master thread all the same.
PLAIN = [
    [i * i for i in range(2000)],
    {"n": 147, "f": [0.5 * i for i in range(300)], "b": bytes(range(256))},
    (147, -147, 2**70, "\x93", frozenset({147}), {147: None}, bytearray(b"\x93")),
]


@pytest.mark.parametrize("value", PLAIN, ids=["squares", "mixed", "odd bytes"])
def test_plain_data_is_unpickled_by_loads_plain_despite_the_byte_scan(value: object) -> None:
    data = pickle.dumps(value, protocol=5)
    assert needs_decoder(data, 0)  # the scan alone would send it to a decoder thread
    assert loads_plain(memoryview(data)) == value


RAN: list[str] = []


def note(what: str) -> None:
    RAN.append(what)


class Noisy:
    """Unpickling one runs code: it notes that it ran."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (note, ("unpickled",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_loads_plain_stops_at_the_first_global_before_any_code_runs(protocol: int) -> None:
    data = pickle.dumps([1, 2, Noisy(), 4], protocol=protocol)
    try:
        with pytest.raises(NeedsDecoder):
            loads_plain(data)
        assert RAN == []
        pickle.loads(data)  # the decoder thread's unpickling runs it
        assert RAN == ["unpickled"]
    finally:
        RAN.clear()


def test_loads_plain_sends_everything_on_while_copyreg_extensions_exist() -> None:
    copyreg.add_extension("collections", "OrderedDict", 0x7FFF_FF00)
    try:
        with pytest.raises(NeedsDecoder):
            loads_plain(pickle.dumps([1, 2]))
    finally:
        copyreg.remove_extension("collections", "OrderedDict", 0x7FFF_FF00)
    assert loads_plain(pickle.dumps([1, 2])) == [1, 2]


def test_a_first_try_that_needs_a_decoder_goes_to_one_in_order(decoders: Decoders) -> None:
    loop, log = FakeLoop(), []
    order = InOrder(loop, decoders)
    tried: list[str] = []

    def refuses() -> Callable[[], None]:
        tried.append("plain")
        raise NeedsDecoder("a global")

    order.add(message("cheap", log), offload=False, answer=True, plain=message("plain", log))
    assert log == ["plain"]  # the first try served: decode itself never ran
    order.add(message("decoded", log), offload=False, answer=True, plain=refuses)
    order.add(message("behind", log), offload=False, answer=True, plain=message("next", log))
    assert tried == ["plain"]
    assert log == ["plain"] and not order.idle  # on a decoder thread; the next one waits
    loop.run_one()
    assert log == ["plain", "decoded", "next"]
    assert order.idle and order.answers == 0
