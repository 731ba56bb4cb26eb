"""Selective Forwarding Unit: every publisher's RTP packets forwarded to each subscriber as they
arrive, with simulcast layer selection, bandwidth estimation, dynacast, active speakers and last-N,
and no decoding or encoding on the forwarding path.

Pure logic (RTP helpers, munger, packet cache, NACK, layer selection, bandwidth, speakers) takes
the clock as an argument and never touches a socket; ``forwarding`` and ``room`` tie it to aiortc,
whose private API is used only in ``aiortc_hooks``.
"""
