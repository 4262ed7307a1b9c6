"""Part planning obeys S3's multipart rules for every legal size."""

import pytest

from s3sync.transfer.checksums import content_md5, multipart_etag
from s3sync.transfer.errors import PlanError
from s3sync.transfer.plan import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, MiB, TiB, plan


def covers(p):
    """The parts tile [0, size) exactly, in order."""
    pos = 0
    for n in range(1, p.parts + 1):
        start, end = p.byte_range(n)
        assert start == pos
        pos = end + 1
    return pos == p.size


def test_empty_object_is_one_whole_copy():
    p = plan(0)
    assert (p.multipart, p.parts, p.byte_range(1)) == (False, 1, (0, -1))


def test_just_under_five_mib_is_copied_whole():
    p = plan(5 * MiB - 1)
    assert not p.multipart and p.parts == 1 and p.byte_range(1) == (0, 5 * MiB - 2)


def test_exactly_five_mib_is_one_multipart_part():
    p = plan(5 * MiB, 16 * MiB)
    assert p.multipart and p.parts == 1 and covers(p)


def test_five_mib_plus_one_byte():
    p = plan(5 * MiB + 1, 5 * MiB)
    assert p.multipart and p.parts == 2 and p.byte_range(2) == (5 * MiB, 5 * MiB)
    assert covers(p)


def test_target_part_size_is_used_when_it_fits():
    p = plan(100 * MiB + 3, 16 * MiB)
    assert p.part_size == 16 * MiB and p.parts == 7 and covers(p)


def test_target_below_s3_minimum_is_raised_to_five_mib():
    assert plan(50 * MiB, 1 * MiB).part_size == MIN_PART_SIZE


def test_five_tib_fits_in_ten_thousand_parts():
    p = plan(5 * TiB, 8 * MiB)
    assert p.parts <= MAX_PARTS and MIN_PART_SIZE <= p.part_size <= MAX_PART_SIZE
    assert p.part_size % MiB == 0
    assert covers(p)


@pytest.mark.parametrize("size", [6 * MiB, 80 * 1024**3 + 1, 1 * TiB, 3 * TiB + 12345])
def test_every_size_fits(size):
    p = plan(size, 16 * MiB)
    assert p.parts <= MAX_PARTS and p.part_size <= MAX_PART_SIZE and covers(p)


def test_over_five_tib_is_refused_permanently():
    with pytest.raises(PlanError, match="5 TiB"):
        plan(5 * TiB + 1)


def test_part_number_outside_the_plan():
    with pytest.raises(ValueError):
        plan(10 * MiB, 5 * MiB).byte_range(3)


def test_multipart_etag_matches_s3s_formula():
    import hashlib
    parts = [b"a" * 10, b"b" * 7]
    md5s = [hashlib.md5(p).hexdigest() for p in parts]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2"
    assert multipart_etag(md5s) == expected
    assert content_md5(hashlib.md5(b"").hexdigest()) == "1B2M2Y8AsgTpgAmY7PhCfg=="
