"""The local message bus: a broker on a Unix stream socket and an async client.

framing   the wire format (pure): length-prefixed frames, a typed envelope, an optional attachment
topics    every topic and method with its one declared message type and delivery policy
broker    the broker daemon: routing, retained values, slow-consumer policy, peer credentials
client    the async client library every daemon uses: publish, subscribe, request, serve
framering shared-memory ring for raw frames; only sequence numbers ride the bus
"""
