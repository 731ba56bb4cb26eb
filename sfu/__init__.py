"""Selective Forwarding Unit: RTP forwarding with per-subscriber layer selection (not built yet)."""
