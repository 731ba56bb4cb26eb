"""A short run of ``benchmarks.floor``: the sender process protects and writes every copy it is
asked for, to sockets this process reads, and reports its CPU per copy."""

from __future__ import annotations

from benchmarks.floor import copy_floor
from sfu import fastsend


async def test_the_floor_writes_every_copy_and_measures_its_cpu() -> None:
    result = await copy_floor(8, seconds=0.5, rate=40, core=None)
    assert result["packets"] == 20 and result["copies_written"] == 160
    assert result["copies_received"] == 160  # each copy reached its own socket
    assert result["smallest_received"] == 1200 + 16  # protected: AES-GCM's tag
    assert result["us_per_copy"] > 0 and result["copies_per_core_second"] > 0
    assert result["path"] == ("native sendmmsg" if fastsend.NATIVE is not None else "python sendto")
