import pytest

# tests/support/ holds helpers that assert; pytest rewrites their asserts as a test module's, so a failure shows values
pytest.register_assert_rewrite("tests.support")
