"""Security helpers for consumers (origin validators for WebSocket connects)."""
