"""The test harness: which PostgreSQL server the tests run against, and the version matrix.

`servers` chooses and describes the session's server (the sandbox's providers, or one
major's binaries); `builds` finds or fetches server builds of every supported major;
`matrix` runs the database tests on each of them (``make test-matrix``).
"""
