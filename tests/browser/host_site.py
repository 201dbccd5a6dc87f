"""Another site that embeds the widget, for the cross-origin tests: a plain HTTP server on its own port.

A site owner's page is some HTML of theirs with the one script tag and a place per tool; here each test writes
that HTML and the server hands it out under a path. Its origin (``http://127.0.0.1:PORT``) is another one than
the votes API's, so the browser applies CORS exactly as on a real site.
"""

import threading
from collections.abc import Mapping, Sequence
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HostSite:
    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def page(self, path: str, html: str) -> str:
        """Serve ``html`` at ``path``; its URL."""
        self.pages[path] = html.encode()
        return self.origin + path

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def embed_page(
    widget_src: str,
    places: Sequence[Mapping[str, str]],
    *,
    lang: str = "en",
    style: str = "",
) -> str:
    """A host page: a heading, one ``<div data-shipskip ...>`` per place, the script tag.

    A place's attributes are its data- attributes by their short names (``tool`` for data-tool), and ``id``.
    """
    divs = "".join(
        "<div data-shipskip "
        + " ".join(f'{name if name == "id" else "data-" + name}="{escape(value)}"' for name, value in place.items())
        + "></div>"
        for place in places
    )
    return (
        f'<!doctype html><html lang="{escape(lang)}"><head><meta charset=utf-8><title>A site</title>'
        f'<link rel=icon href="data:,"><style>{style}</style></head>'
        f'<body><h1>Our review</h1>{divs}<script src="{escape(widget_src)}" defer></script></body></html>'
    )
