"""Composition of the whole product: configuration (``config``), logging, the event loop servers
run on (``runtime``), the all-in-one application (``app``) and the ``videoconf`` command (``cli``).
"""
