"""Make a set of servers ready for shipskip: migrations, the stream and consumer, a catalogue."""

import logging
from pathlib import Path

from contracts.catalog import decode_catalog
from infra.migrate import migrate
from services.shared.catalog_store import migrate_legacy, open_bucket, stored_revision, write_catalog
from services.shared.config import NatsSettings
from services.shared.jetstream import connect, ensure_tally_consumer, ensure_votes_stream

log = logging.getLogger(__name__)

DEMO_CATALOG = Path(__file__).parent.parent / "catalog" / "demo.json"


async def bootstrap(
    nats: NatsSettings,
    database_url: str,
    *,
    duplicate_window_s: float = 120.0,
    catalog_file: Path | None = DEMO_CATALOG,
    replicas: int = 1,
) -> None:
    """Idempotent: safe on every start. Loads ``catalog_file`` only when no catalogue was ever loaded; converts a
    catalogue stored by an earlier release in one key to one entry per tool and comparison.

    ``replicas``: copies of the stream and the catalogue bucket (SHIPSKIP_STREAM_REPLICAS) on a NATS cluster.
    """
    await migrate(database_url)
    nc = await connect(nats, "shipskip-bootstrap")
    try:
        js = nc.jetstream()
        await ensure_votes_stream(js, duplicate_window_s, replicas)
        await ensure_tally_consumer(js, max_ack_pending=20_000)
        log.info("%s", await migrate_legacy(js, replicas))
        bucket = await open_bucket(js)
        loaded = bucket is not None and await stored_revision(bucket) > 0
        if not loaded and catalog_file is not None:
            catalog = decode_catalog(catalog_file.read_bytes())
            await write_catalog(js, catalog, replicas, nc.max_payload)
            log.info("loaded the catalogue %s (%d comparisons)", catalog_file.name, len(catalog.comparisons))
    finally:
        await nc.close()
