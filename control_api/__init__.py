"""The control API (aiohttp): accounts and tokens, meetings and scheduling, invitations, chat
history, recordings, notifications and room tokens for the SFU.

Thin handlers (``handlers``) declare their models once (``routing``, which also writes the OpenAPI
spec); every business rule lives in ``services``; storage is SQLAlchemy Core on SQLite or
PostgreSQL (``storage``).
"""
