"""Rebuild and verify (``shipskip rebuild``/``verify``, ``/admin/rebuild``): replay the stream into fresh tables."""
