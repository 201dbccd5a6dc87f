"""The votes API: checks a visitor's vote and appends it to the VOTES stream. Stateless; run any number."""
