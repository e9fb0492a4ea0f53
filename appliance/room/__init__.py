"""The hosted room service (`appliance run room`): pairing, rooms, viewer links, signaling.

protocol.py     the signaling messages (the contract with appliance.publisher and the viewer)
app.py          the aiohttp application, wired in one place; daemon.py runs it
api.py          the JSON API (api_types.py its bodies, openapi.py its description)
ws.py, hub.py   the signaling WebSocket, and the pure relay/presence core behind it
admin.py        the admin pages' handlers (pages.py renders, auth.py sessions and CSRF)
view.py         /view/<invite>: the viewer page and /static/
db.py           SQLite: schema and opening; accounts.py, rooms.py, devices.py hold the data
device_flow.py  RFC 8628 poll decisions (pure); tokens.py codes and secrets
passwords.py, ratelimit.py, turn.py, accesslog.py, config.py, admin_cli.py: what they say
"""
