"""Recorder: taps the SFU's tracks into one mixed MP4 (not built yet)."""
