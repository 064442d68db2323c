"""Real servers started on loopback for the demo and the test suite.

Nothing here runs in production: an operator points novahooks at their own
IPAM, DNS and directory. These launchers exist so that the demo and the tests
talk to the same kind of server an operator runs, never to a mock.
"""
