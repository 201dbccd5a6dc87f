"""How granian serves the votes and read APIs: connections per worker and how long one may sit idle.

granian's ``--backpressure`` counts open connections, not requests: a worker holds a slot per connection from
accept to close and accepts nothing while every slot is taken. Its default (backlog / workers, 1024 for one worker)
let ~1,100 idle keep-alive connections leave the votes API answering nobody (issue 21). A connection costs granian
about 10 KiB and no Python until it sends a request (measured: 5,000 idle connections, +51 MiB RSS), so the slots
are sized well above any crowd one client address may gather, and bounded by the open-file limit instead.

``--http 1``: granian's default HTTP version detection (hyper-util's "auto") runs no timer until a request's first
bytes, so a connection that never sends anything was held for good, whatever the header timeout; HTTP/1.1 alone
starts the timer on accept (measured with granian 2.8.9). The services sit behind a proxy that speaks HTTP/1.1 to
them (infra/deploy/nginx.conf, the Ingress), so nothing is lost.
"""

import resource

import msgspec

from services.shared.config import ConfigError, Env

DEFAULT_CONNECTIONS = 10_000
"""Open connections per worker, unless the open-file limit allows fewer."""
RESERVED_FILES = 256
"""Open files a worker keeps for everything but client connections (Postgres, NATS, Redis, logs, metric files)."""
DEFAULT_IDLE_TIMEOUT_MS = 10_000
"""How long a connection may take to send a request head, from accept or from the end of its last answer."""


def open_files_limit() -> int:
    """This process's soft limit on open files (what each granian worker inherits)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 2**31 if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one (granian does not); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return open_files_limit()


class HttpServerSettings(msgspec.Struct, frozen=True):
    connections: int
    """Open connections each worker takes (granian's ``--backpressure``); past it, new ones wait in the backlog."""
    idle_timeout_ms: int
    """granian's ``--http1-header-read-timeout``: a connection silent this long before a request head is closed,
    whether it just opened or kept alive after an answer (a slow-loris head too)."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> "HttpServerSettings":
        env = env or Env()
        default = max(1, min(DEFAULT_CONNECTIONS, open_files_limit() - RESERVED_FILES))
        return cls(
            connections=env.integer("GRANIAN_BACKPRESSURE", default, minimum=1),
            idle_timeout_ms=env.integer(
                "GRANIAN_HTTP1_HEADER_READ_TIMEOUT", DEFAULT_IDLE_TIMEOUT_MS, minimum=1, maximum=60_000
            ),
        )

    def check_open_files(self) -> None:
        """Every connection is an open file: more connections than the process may open would have granian fail
        to accept (and retry) instead of letting new connections wait."""
        limit = open_files_limit()
        if self.connections + RESERVED_FILES > limit:
            needed = self.connections + RESERVED_FILES
            raise ConfigError(
                f"GRANIAN_BACKPRESSURE={self.connections} connections per worker need {needed} open files, and the "
                f"limit is {limit} (raise `ulimit -n` or lower GRANIAN_BACKPRESSURE)"
            )

    def granian_options(self) -> list[str]:
        return [
            "--http", "1",
            "--backpressure", str(self.connections),
            "--http1-header-read-timeout", str(self.idle_timeout_ms),
        ]  # fmt: skip
