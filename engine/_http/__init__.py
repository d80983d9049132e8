"""The HTTP API and web UI (imports the web stack)."""
