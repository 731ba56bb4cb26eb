"""Clients: the web client and the Python participant SDK (not built yet)."""
