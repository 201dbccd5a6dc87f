import pytest

# The shared checks live outside test modules: have pytest explain their failing asserts too.
pytest.register_assert_rewrite("tests.faults.ingest")
