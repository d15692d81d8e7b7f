"""Helpers shared by the tests, imported as ``tests.support.<module>``.

    constants   BASE_DN, ADMIN_TOKEN, TEST_ROUNDS: the values every fixture uses
    slapd       running_slapd(): a real slapd on a free port; ldap_tool(); empty_directory()
    api         Client (Flask test client with a token), LiveGateway and serving() (HTTPS)
    wait        wait_until(): poll a condition with a deadline
    sync        the SPEC.md document and its hashes, Writes (write counting), MakeRunner
    httpsserver an HTTPS server of JSON documents (the sync's sources), with a throw-away CA

Fixtures live in the conftest.py files and are built from these; a test
imports helpers from here, never from a conftest module.
"""
