"""Clients of VideoConf: the web client (``web/``, plain ES modules served by the node), the Python
participant SDK and ``videoconf bot`` (``sdk``), and the load tester (``loadtest``).
"""
