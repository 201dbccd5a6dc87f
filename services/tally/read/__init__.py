"""The read API deployable (``shipskip serve read``): live community figures as JSON and Server-Sent Events."""
