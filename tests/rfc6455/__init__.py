"""RFC 6455 conformance tests for the WebSocket server, organised like the Autobahn testsuite."""
