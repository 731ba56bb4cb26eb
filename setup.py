"""The one native part: the forwarding loop's SRTP protect and sendmmsg (sfu/_fastsend.c).

It is optional: where it cannot be built, the SFU sends each copy from Python (sfu/fastsend.py).
Everything else about the package is in pyproject.toml.
"""

import sys

from setuptools import Extension, setup

extensions = []
if sys.platform.startswith("linux"):  # sendmmsg
    extensions.append(Extension("sfu._fastsend", ["sfu/_fastsend.c"], optional=True, extra_compile_args=["-O2"]))

setup(ext_modules=extensions)
