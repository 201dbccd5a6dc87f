"""The browsable API page (``/schema``) of both HTTP services, with the files it needs served by the service."""
