"""The projector deployable (``shipskip projector``): folds the VOTES stream into Postgres, one writer per partition."""
