"""The tally: a projector folding the VOTES stream into Postgres, and a read API serving community figures."""
