"""What the servers need: migrations, stream definitions, the local stack runner, the demo catalogue."""
