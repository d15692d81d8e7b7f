"""Values shared by the fixtures and the tests."""

from __future__ import annotations

BASE_DN = "dc=mail,dc=test"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
TEST_ROUNDS = 1000  # cheap hashes for tests; the default (100 000) is tested on its own
