"""The event loop every server of this project runs on: uvloop where it is installed (it is a
dependency on every platform that builds it), else asyncio's own.

Servers and the test suite both take their loop from here, so that the tests run on the loop
production uses: uvloop's transports, for one, are not subclasses of ``asyncio.Transport``, and an
``isinstance`` check that passes on asyncio's loop fails under uvloop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """What creates the production event loop."""
    try:
        import uvloop
    except ImportError:  # uvloop does not build on every platform; asyncio's loop works too
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def install() -> None:
    """Make ``asyncio.run`` and aiohttp's ``run_app`` use the production loop in this process."""
    factory = loop_factory()
    if factory is asyncio.new_event_loop:
        return
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
