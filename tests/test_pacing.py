"""Large request bodies are read at a bounded rate (core/serving/pacing.py): the first MiB
of each body at once, the rest at the pacer's rate shared by every body, and every byte
arrives. Deterministic: a fake clock that moves only when the pacer sleeps."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.serving.pacing import BODY_FLOOR, BULK_RATE, MAX_LAG_S, BulkPacer

MIB = 2**20


class FakeTime:
    """A clock that stands still unless slept on (or moved by the test)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def pacer(rate: float = MIB, free: int = MIB, floor: float | None = None
          ) -> tuple[BulkPacer, FakeTime]:
    """(A floor far below the rate unless given: the shared bucket alone.)"""
    t = FakeTime()
    return BulkPacer(rate, free, floor or rate / 1000, clock=t.clock, sleep=t.sleep), t


def test_a_small_body_is_never_paced():
    p, t = pacer()
    for at in range(0, MIB, 65536):
        assert p.delay(at, 65536) == 0.0
    assert p.paced_bytes == 0


def test_bytes_past_the_free_part_wait_their_share_of_the_rate():
    p, t = pacer(rate=MIB, free=MIB)
    p.delay(MIB - 1000, 3000)  # the piece that crosses the first MiB: its part past it
    assert p.paced_bytes == 2000
    p2, t2 = pacer(rate=MIB, free=MIB)
    waits = [p2.delay(MIB + i * 65536, 65536) for i in range(16)]   # one more MiB at once
    assert waits[-1] == pytest.approx(1.0)          # a MiB at a MiB/s: a second behind
    assert waits == sorted(waits)
    assert p2.paced_bytes == MIB


def test_idle_time_earns_no_burst():
    p, t = pacer(rate=MIB)
    assert p.delay(MIB, MIB // 2) == pytest.approx(0.5)
    t.now += 60.0                                   # a minute of nothing
    assert p.delay(MIB, MIB // 2) == pytest.approx(0.5)  # still the rate, not 60 s of credit


def test_the_rate_is_shared_by_every_body_read_at_once():
    p, t = pacer(rate=MIB)
    assert p.delay(MIB, MIB // 4) == pytest.approx(0.25)   # body A
    assert p.delay(MIB, MIB // 4) == pytest.approx(0.5)    # body B waits behind A's share
    assert p.delay(5 * MIB, MIB // 4) == pytest.approx(0.75)


def test_waits_too_short_to_sleep_are_carried_over():
    p, t = pacer(rate=MIB)
    small = 1200                                   # ~1.1 ms at a MiB/s: not slept...
    assert p.delay(MIB, small) == 0.0
    assert p.delay(MIB, small) == pytest.approx(2 * small / MIB)  # ...but counted


def test_however_many_bodies_share_the_rate_each_keeps_the_floor():
    """Hundreds of bodies at once can't starve one: each piece waits at most what it takes
    at the floor rate, and the shared backlog is capped (nothing lingers after)."""
    p, t = pacer(rate=128 * MIB, floor=BODY_FLOOR)
    for _ in range(1000):                      # a flood: 1000 pieces of 320 KiB, one instant
        assert p.delay(MIB, 320 * 1024) <= 320 * 1024 / BODY_FLOOR + 1e-9
    assert p.delay(MIB, 320 * 1024) == pytest.approx(320 * 1024 / BODY_FLOOR)
    t.now += MAX_LAG_S                         # the flood stops: a second later...
    assert p.delay(MIB, 320 * 1024) == pytest.approx(320 * 1024 / (128 * MIB))  # the rate's


def test_the_wait_is_not_counted_against_the_bodys_own_timeout():
    """The body's read deadline moves on by every second the pacer made it wait."""
    from core.serving.asgi import OipApp

    class Window:
        def __init__(self) -> None:
            self.at = 30.0

        def when(self) -> float:
            return self.at

        def reschedule(self, when: float) -> None:
            self.at = when

    class Routes:
        max_body_bytes = 64 * MIB

    class Req:
        _body = b""
        _arrived, _gap = 1.0, 0.5      # another request came half a second before it

        def header(self, name):
            return None

    app = OipApp(Routes())
    app._arrived = 1.0
    p, fake = pacer(rate=MIB, free=0)
    app.pacer = p
    pieces = [b"x" * 65536] * 8

    async def receive():
        return {"type": "http.request", "body": pieces.pop(), "more_body": bool(pieces)}

    window = Window()
    clock = [0.0, 94.0, 0, 0.0]   # (its start, its cap, bytes so far, time paced)
    req = Req()
    # On a thread of its own: in this process another loop may be running (Playwright's).
    t = threading.Thread(target=lambda: asyncio.run(
        app._read(req, receive, 64 * MIB, 8 * 65536, None, window, [8 * 65536], clock)))
    t.start()
    t.join(60)
    app.close()
    assert len(req._body) == 8 * 65536
    assert p.slept_s == pytest.approx(7 * 65536 / MIB)      # the last piece: no wait
    assert window.at == pytest.approx(30.0 + p.slept_s) and clock[3] == p.slept_s


def test_a_rate_of_nothing_is_refused_in_words():
    with pytest.raises(ValueError, match="bytes_per_s must be > 0"):
        BulkPacer(0)


@pytest.mark.parametrize("others", ["just before", "none", "mid-body"])
def test_the_app_reads_a_large_body_whole_at_the_pacers_rate(others):
    """Through the server's ASGI app: a 5 MiB body arriving in 64 KiB pieces reaches the
    route byte for byte. With another request just before it, its first MiB is unpaced and
    the other four slept for at the rate; alone on the server it is not paced at all; when
    another request arrives part-way (after 2 MiB), pacing starts there."""
    import time
    from core.serving.asgi import OipApp

    body = bytes(range(256)) * (5 * MIB // 256)
    seen = []

    class Routes:
        max_body_bytes = 64 * MIB

        def check(self, *a):
            pass

        def body_limit(self, path):
            return 64 * MIB

        def is_infer(self, method, path):
            return False

        def is_quick(self, method, path):
            return True

        def begin(self, method, path, req, *a):
            seen.append(bytes(req.raw_body()))
            return 200, {"ok": True}

    app = OipApp(Routes())
    assert app.pacer.bytes_per_s >= BULK_RATE
    fake = FakeTime()
    app.pacer = BulkPacer(4 * MIB, MIB, clock=fake.clock, sleep=fake.sleep)
    pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    if others == "just before":
        app._arrived = time.monotonic()        # (as a request that arrived just now)

    async def receive():
        if others == "mid-body" and len(pieces) == 80 - 32:
            app._arrived = time.monotonic()    # another request arrives, 2 MiB in
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "raw_path": b"/x",
             "headers": [(b"content-length", str(len(body)).encode())]}
    # On a thread of its own: in this process another loop may be running (Playwright's).
    t = threading.Thread(target=lambda: asyncio.run(app(scope, receive, send)))
    t.start()
    t.join(60)
    app.close()
    assert sent and sent[0]["status"] == 200, sent[:1]
    assert seen == [body]
    # the last piece is not paced (nothing follows it): 4 MiB less one piece, at 4 MiB/s
    paced = {"just before": 4 * MIB - 65536, "none": 0, "mid-body": 3 * MIB - 65536}[others]
    assert app.pacer.paced_bytes == paced
    assert fake.now - 100.0 == pytest.approx(paced / (4 * MIB))
    assert app.bodies_in_flight == 0


def test_a_body_earns_its_time_as_it_keeps_coming():
    """5 s to begin, then time as bytes come at 256 KiB/s, within the body's cap (a fixed
    window cut a slow client's over-limit body before its 413; a reviewer)."""
    from core.serving.bodies import BodyReader

    class Window:
        at = 5.0

        def when(self) -> float:
            return self.at

        def reschedule(self, when: float) -> None:
            self.at = when

    window, clock = Window(), [100.0, 40.0, 0, 2.0]   # began at 100, 40 s cap, 2 s paced
    BodyReader._keep_going(window, clock, MIB)         # 1 MiB: 5 + 4 s
    assert window.at == pytest.approx(100.0 + 2.0 + 9.0) and clock[2] == MIB
    BodyReader._keep_going(window, clock, 512 * 1024)  # (never earlier than it was)
    assert window.at == pytest.approx(111.0)
    BodyReader._keep_going(window, clock, 64 * MIB)    # within the cap
    assert window.at == pytest.approx(100.0 + 2.0 + 40.0)
