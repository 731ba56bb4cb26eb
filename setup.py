"""The native parts: the forwarding loop's SRTP protect and sendmmsg (sfu/_fastsend.c), and the
TURN relay's routed ChannelData with recvmmsg and sendmmsg (turn/_relay.c).

Both are optional: where they cannot be built, the SFU sends each copy from Python
(sfu/fastsend.py) and the TURN server relays from Python (turn/fastpath.py).
Everything else about the package is in pyproject.toml.
"""

import sys

from setuptools import Extension, setup

extensions = []
if sys.platform.startswith("linux"):  # sendmmsg
    extensions.append(Extension("sfu._fastsend", ["sfu/_fastsend.c"], optional=True, extra_compile_args=["-O2"]))
    extensions.append(Extension("turn._relay", ["turn/_relay.c"], optional=True, extra_compile_args=["-O2"]))

setup(ext_modules=extensions)
