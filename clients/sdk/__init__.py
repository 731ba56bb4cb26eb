"""The Python participant SDK: signaling client and synthetic, verifiable media."""
