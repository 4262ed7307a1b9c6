"""Part planning: pure and tiny (after s3transfer's ChunksizeAdjuster).

S3's rules: every part but the last is 5 MiB to 5 GiB, at most 10,000 parts, objects up to 5 TiB. Objects under
5 MiB are copied whole with GET + PUT; larger ones as a multipart upload whose part size is the configured target,
grown (in whole MiB) until the object fits in 10,000 parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from s3sync.transfer.errors import PlanError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * TiB
MULTIPART_THRESHOLD = 5 * MiB  # objects smaller than this are copied whole
PART_SIZE_STEP = MiB  # part sizes are whole multiples of this


@dataclass(frozen=True)
class Plan:
    size: int
    part_size: int
    parts: int
    multipart: bool

    def byte_range(self, part_number: int) -> tuple[int, int]:
        """Inclusive (start, end) of a 1-based part; (0, -1) for an empty object."""
        if not 1 <= part_number <= self.parts:
            raise ValueError(f"part {part_number} outside 1..{self.parts}")
        start = (part_number - 1) * self.part_size
        end = min(start + self.part_size, self.size) - 1
        return start, end


def plan(size: int, target_part_size: int = 16 * MiB) -> Plan:
    """Plan the copy of an object of `size` bytes."""
    if size < 0:
        raise ValueError("size must be >= 0")
    if size > MAX_OBJECT_SIZE:
        raise PlanError(f"object of {size} bytes is larger than S3's 5 TiB limit")
    if size < MULTIPART_THRESHOLD:
        return Plan(size=size, part_size=size, parts=1, multipart=False)
    part_size = max(target_part_size, MIN_PART_SIZE, -(-size // MAX_PARTS))
    part_size = -(-part_size // PART_SIZE_STEP) * PART_SIZE_STEP  # whole MiB, rounded up
    part_size = min(part_size, MAX_PART_SIZE)
    parts = -(-size // part_size)
    return Plan(size=size, part_size=part_size, parts=parts, multipart=True)
