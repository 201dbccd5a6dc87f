"""shipskip's processes: the votes API, the tally projector and read API, and the operator CLI."""
