"""The rate cap's token bucket and the speed floor, on an injected clock (no sleeping)."""

import pytest

from weightlift.downloader.throughput import SpeedFloor, TokenBucket


def test_bucket_lets_a_burst_through_then_paces_to_the_rate():
    bucket = TokenBucket(1000.0, now=0.0, burst=500)
    assert bucket.take(500, 0.0) == 0.0  # the burst
    assert bucket.take(1000, 0.0) == pytest.approx(1.0)  # 1,000 bytes owed at 1,000 B/s
    # Waiting as told pays the debt: the next block costs only itself.
    assert bucket.take(100, 1.0) == pytest.approx(0.1)


def test_bucket_average_over_many_blocks_is_the_rate():
    bucket = TokenBucket(1 << 20, now=0.0)
    now = 0.0
    for _ in range(100):  # 100 blocks of 64 KiB: 6.25 MiB at 1 MiB/s
        now += bucket.take(64 << 10, now)
    assert now == pytest.approx(6.25 - bucket.burst / (1 << 20), rel=0.01)


def test_bucket_does_not_save_up_more_than_a_burst():
    bucket = TokenBucket(1000.0, now=0.0, burst=100)
    assert bucket.take(100, 3600.0) == 0.0  # an hour idle buys one burst, not 3.6 MB
    assert bucket.take(100, 3600.0) == pytest.approx(0.1)


@pytest.mark.parametrize("rate", [0, -1.0])
def test_bucket_needs_a_positive_rate(rate):
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate, now=0.0)


def test_speed_floor_judges_each_window():
    floor = SpeedFloor(1024, 30.0, now=100.0)
    assert floor.deadline() == 130.0
    floor.count(30 * 1024)
    assert floor.check(130.0)  # exactly the floor
    assert floor.deadline() == 160.0
    floor.count(100)  # headers + 100 bytes, then silence
    assert not floor.check(160.0)


def test_speed_floor_a_trickle_fails():
    floor = SpeedFloor(1024, 2.0, now=0.0)
    for _ in range(2):
        floor.count(1)  # 1 byte/s
    assert not floor.check(2.0)
