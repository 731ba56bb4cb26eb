"""Signaling WebSocket between clients and SFU nodes (not built yet)."""
