"""What went wrong, in one line, when an operator command or admin request meets a server that is down or unready.

The CLI prints it and exits 2; the admin API answers 503 with it. Anything else is a bug and keeps its traceback.
"""

import asyncpg
import nats.errors
import nats.js.errors

OUTAGES: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionRefusedError, a name that does not resolve, a reset connection
    TimeoutError,  # nats-py's TimeoutError is one too
    nats.errors.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def describe_outage(exc: BaseException, server: str | None = None) -> str:
    """One line for an exception of ``OUTAGES``: which server (``server`` when the caller knows), what to do when
    there is something to do."""
    if isinstance(exc, asyncpg.UndefinedTableError):
        return f"the database lacks shipskip's tables ({exc}): run `shipskip migrate`"
    if isinstance(exc, nats.js.errors.NotFoundError):
        return f"NATS: {_text(exc)} (if the VOTES stream is missing: run `shipskip migrate`)"
    if isinstance(exc, nats.js.errors.ServiceUnavailableError | nats.errors.NoRespondersError):
        return "NATS does not answer for JetStream (is JetStream enabled, the server up?)"
    if isinstance(exc, nats.errors.TimeoutError):
        return f"NATS did not answer in time ({_text(exc)})"
    if isinstance(exc, TimeoutError):
        return f"{server or 'a server'} did not answer in time ({_text(exc)})"
    if isinstance(exc, nats.errors.Error):
        return f"NATS: {_text(exc)}"
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"Postgres: {_text(exc)}"
    # nats-py reports its own failures as nats.errors; a bare OSError comes from asyncpg connecting to Postgres.
    return f"cannot reach {server or 'Postgres'}: {_text(exc)}"


def _text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
