"""Every shape that crosses a process boundary: events, HTTP bodies, subjects, the catalogue.

Services import contracts; contracts import nothing of the services.
"""
