"""The in-process server with a meeting (``meeting``), for the regression tests that need one."""

from tests.media.conftest import meeting  # noqa: F401 (the fixture)
