"""The image's HEALTHCHECK (the Dockerfile copies it to /app/healthcheck.py): exit 0 when this container's shipskip
process answers ``/healthz`` on its ops port, 1 otherwise.

One image runs every part, so it asks each part's ops port (``SHIPSKIP_VOTES_METRICS_PORT``,
``SHIPSKIP_TALLY_METRICS_PORT``, ``SHIPSKIP_PROJECTOR_PORT``, or their defaults) on 127.0.0.1: only the process this
container runs listens on one of them. Plain standard library: the slim image has no curl or wget.
"""

import os
import sys
import urllib.error
import urllib.request

PORTS = {
    "SHIPSKIP_VOTES_METRICS_PORT": "9080",
    "SHIPSKIP_TALLY_METRICS_PORT": "9081",
    "SHIPSKIP_PROJECTOR_PORT": "8082",
}
TIMEOUT_S = 2.0


def answers(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT_S) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main() -> int:
    ports = {os.environ.get(variable) or default for variable, default in PORTS.items()}
    return 0 if any(answers(port) for port in sorted(ports) if port != "0") else 1


if __name__ == "__main__":
    sys.exit(main())
