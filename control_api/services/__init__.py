"""The control API's services: all business rules live here, handlers stay thin.

Signaling and the recorder call the same services (chat, participants, recordings), so the rules
hold whichever way a request arrives.
"""
