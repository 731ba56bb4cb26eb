"""The signaling protocol between clients and an SFU node: its messages as pydantic models (from
which ``schema.json`` is generated) and the WebSocket server that enforces room-token grants,
bounds and rate-limits frames, and lets a dropped session resume.
"""
