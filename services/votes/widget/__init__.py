"""The embeddable site widget (widget.js) and the demo pages that show it, served by the votes service."""
