"""TURN server for participants behind strict NATs (not built yet)."""
