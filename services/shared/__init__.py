"""Pieces every service uses: settings, NATS set-up, the catalogue view, HTTP errors."""
