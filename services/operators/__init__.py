"""What operators run: status, dead letters, moderation, and the admin HTTP API (CLI in services/cli.py)."""
