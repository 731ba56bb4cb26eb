"""Recorder: taps a meeting's tracks on the SFU and writes one mixed MP4 (a grid of everyone's
video, with names, and every voice mixed), in a worker process per recording.

``wire``, ``timeline``, ``mixer`` and ``layout`` are pure logic; ``compositor`` and ``worker`` draw
and encode with PyAV; ``manager`` is the SFU side: taps, the worker's pipe, start and stop.
"""
