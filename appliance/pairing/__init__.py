"""The kiosk's side of pairing with a room service (RFC 8628 device authorization grant).

service.py      Pairing: the device flow, pairing.status, pairing.start / pairing.unpair
client.py       the HTTP calls to the room service
credentials.py  the token on disk (0600); current_credentials() for other daemons
cli.py          `appliance pair --room-url URL`
"""
