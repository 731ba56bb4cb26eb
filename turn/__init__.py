"""TURN server (RFC 8656) for participants behind strict NATs and firewalls: UDP, TCP and TLS
listeners, long-term and time-limited (use-auth-secret) credentials, a peer address policy that
keeps relays off private networks, and quotas.

``stun``, ``peers``, ``auth`` and ``server`` are sans-IO, with the clock passed in; ``transport``
and ``service`` hold the sockets and the ``videoconf turn`` command.
"""
