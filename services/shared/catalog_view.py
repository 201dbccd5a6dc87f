"""The current catalogue, held in memory and refreshed from the CATALOG key-value bucket.

Services poll the one key every few seconds rather than watch it: a poll survives NATS restarts with no
consumer state to rebuild, and one small request every few seconds costs nothing.
"""

import asyncio
import logging
from collections.abc import Callable

from nats.js import JetStreamContext

from contracts.catalog import Catalog, Comparison, Tool
from services.shared.jetstream import read_catalog

log = logging.getLogger(__name__)


class CatalogView:
    def __init__(self, js: JetStreamContext, refresh_s: float = 2.0) -> None:
        self._js = js
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        self.revision = 0
        self.catalog = Catalog(tools=[], comparisons=[])
        self._comparisons: dict[str, tuple[Comparison, tuple[Tool, Tool]]] = {}
        self._listeners: list[Callable[[Catalog], None]] = []

    def on_change(self, listener: Callable[[Catalog], None]) -> None:
        self._listeners.append(listener)

    def comparison(self, comparison_id: str) -> tuple[Comparison, tuple[Tool, Tool]] | None:
        """An open comparison with its two tools, or None."""
        return self._comparisons.get(comparison_id)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="catalog-refresh")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def refresh(self) -> None:
        catalog, revision = await read_catalog(self._js)
        if catalog is None or revision == self.revision:
            return
        tools = {tool.id: tool for tool in catalog.tools}
        self._comparisons = {c.id: (c, (tools[c.tools[0]], tools[c.tools[1]])) for c in catalog.comparisons}
        self.catalog, self.revision = catalog, revision
        log.info("catalogue revision %d: %d comparisons", revision, len(self._comparisons))
        for listener in self._listeners:
            listener(catalog)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # any failure: keep serving the last good catalogue
                log.warning("catalogue refresh failed: %s", exc)
