"""The baseline apps the benchmarks measure shipskip against, run under granian exactly like the services."""
