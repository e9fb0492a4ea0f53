"""The setup page: `appliance run setup`, the technician's web page on the local network.

| module | holds |
|---|---|
| `daemon.py` | the bus shell: subscriptions, the HTTP(S) server |
| `app.py` | the aiohttp app: security headers, sessions, login required, CSRF on every POST |
| `auth.py` | the password (scrypt, 0600), the first-use code, sessions, rate limits |
| `context.py` | what every handler needs |
| `live.py` | the last value of each topic shown, and the fields the WebSocket keeps current |
| `forms.py`, `configedit.py` | the settings form's validation, and editing the config file atomically |
| `system.py` | systemd: unit states, restart, reboot, factory reset (only on a kiosk) |
| `logs.py`, `chart.py`, `png.py` | the logs' sources, the events chart, the snapshot's PNG |
| `tls.py`, `html.py` | the self-signed certificate; escaping and the page frame |
| `pages/` | one module per page |
| `static/` | app.js and app.css (no inline script or style; nothing from a CDN) |
"""
