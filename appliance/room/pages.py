"""The admin pages as HTML: pure functions from data to text, no build step, no inline script.

Every value from outside (room names, device models, labels) goes through esc(). Pages read on
a phone (one column, large targets) and work with the keyboard alone (real buttons and links,
labelled fields, a skip link, visible focus); the one script (static/admin.js) only adds the
copy buttons and the page works without it.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

from appliance.room.devices import Device, PairingRequest
from appliance.room.rooms import Invite, Room
from appliance.room.tokens import format_user_code

INVITE_EXPIRY_CHOICES = [
    ("", "never"),
    ("1", "1 hour"),
    ("24", "1 day"),
    ("168", "7 days"),
    ("720", "30 days"),
]


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def when(ts: float | None) -> str:
    if ts is None:
        return "never"
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return f'<time datetime="{iso}">{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))}</time>'


def csrf_input(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(csrf)}">'


def post_button(action: str, csrf: str, label: str, *, extra: str = "", danger: bool = False) -> str:
    cls = ' class="danger"' if danger else ""
    return (
        f'<form method="post" action="{esc(action)}" class="inline">{csrf_input(csrf)}{extra}'
        f'<button type="submit"{cls}>{label}</button></form>'
    )


def layout(title: str, body: str, *, user: str | None = None, csrf: str = "", error: str = "") -> str:
    nav = ""
    if user is not None:
        nav = (
            '<nav aria-label="Main"><ul>'
            '<li><a href="/rooms">Rooms</a></li>'
            '<li><a href="/devices">Devices</a></li>'
            '<li><a href="/activate">Pair a kiosk</a></li>'
            f"<li>{post_button('/logout', csrf, f'Log out {esc(user)}')}</li>"
            "</ul></nav>"
        )
    alert = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} - Room service</title>
<link rel="stylesheet" href="/static/admin.css">
<script src="/static/admin.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><p class="brand">Room service</p>{nav}</header>
<main id="main">
<h1>{esc(title)}</h1>
{alert}{body}
</main>
</body>
</html>
"""


def message(title: str, text: str) -> str:
    return layout(title, f'<p>{esc(text)}</p><p><a href="/rooms">Back to the rooms</a></p>')


def login(csrf: str, next_path: str, *, username: str = "", error: str = "") -> str:
    body = f"""<form method="post" action="/login" class="stack">
{csrf_input(csrf)}<input type="hidden" name="next" value="{esc(next_path)}">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required autofocus value="{esc(username)}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form>"""
    return layout("Log in", body, error=error)


@dataclass(frozen=True)
class RoomRow:
    room: Room
    devices: int
    device_online: bool
    viewers: int


def rooms(user: str, csrf: str, rows: list[RoomRow], *, error: str = "") -> str:
    items = "".join(
        f'<tr><th scope="row"><a href="/rooms/{esc(r.room.id)}">{esc(r.room.name)}</a></th>'
        f"{_td('Kiosks', r.devices)}{_td('Kiosk', 'online' if r.device_online else 'offline')}"
        f"{_td('Viewers now', r.viewers)}</tr>"
        for r in rows
    )
    head = _head("Room", "Kiosks", "Kiosk", "Viewers now")
    table = (
        f"<table><caption>Rooms</caption>{head}<tbody>{items}</tbody></table>"
        if rows
        else "<p>No rooms yet.</p>"
    )
    form = f"""<h2>New room</h2>
<form method="post" action="/rooms" class="stack">{csrf_input(csrf)}
<label for="name">Name</label>
<input id="name" name="name" required maxlength="80" placeholder="Main entrance">
<button type="submit">Create room</button>
</form>"""
    return layout("Rooms", table + form, user=user, csrf=csrf, error=error)


def _td(label: str, content: object) -> str:
    """A cell that names its column, for the stacked layout on narrow screens (admin.css)."""
    return f'<td data-label="{esc(label)}">{content}</td>'


def _head(*names: str) -> str:
    return "<thead><tr>" + "".join(f'<th scope="col">{esc(n)}</th>' for n in names) + "</tr></thead>"


def _device_row(d: Device, room_name: str, online: bool, csrf: str, back: str) -> str:
    revoke = post_button(f"/devices/{d.id}/revoke", csrf, "Revoke", extra=_next(back), danger=True)
    cells = [
        _td("Room", esc(room_name)),
        _td("Status", "<strong>online</strong>" if online else "offline"),
        _td("Last seen", when(d.last_seen)),
        _td("Firmware", esc(d.firmware)),
        _td("Paired", when(d.created)),
        _td("Action", revoke),
    ]
    return (
        f'<tr><th scope="row">{esc(d.model)}<br><small>{esc(d.device_id)}</small></th>{"".join(cells)}</tr>'
    )


def _device_rows(devices: list[tuple[Device, str, bool]], csrf: str, back: str) -> str:
    rows = "".join(_device_row(d, room_name, online, csrf, back) for d, room_name, online in devices)
    head = _head("Kiosk", "Room", "Status", "Last seen", "Firmware", "Paired", "Action")
    return f"<table><caption>Paired kiosks</caption>{head}<tbody>{rows}</tbody></table>"


def _next(path: str) -> str:
    return f'<input type="hidden" name="next" value="{esc(path)}">'


def devices(user: str, csrf: str, devices: list[tuple[Device, str, bool]]) -> str:
    body = _device_rows(devices, csrf, "/devices") if devices else "<p>No kiosk is paired.</p>"
    body += '<p><a href="/activate">Pair a kiosk</a>: enter the code it shows.</p>'
    return layout("Devices", body, user=user, csrf=csrf)


@dataclass(frozen=True)
class NewLink:
    label: str
    url: str


def room(
    user: str,
    csrf: str,
    the_room: Room,
    devices: list[tuple[Device, bool]],
    invites: list[Invite],
    now: float,
    *,
    new_link: NewLink | None = None,
    error: str = "",
) -> str:
    here = f"/rooms/{the_room.id}"
    parts: list[str] = []
    if new_link is not None:
        parts.append(
            '<section class="new-link" aria-labelledby="new-link-title">'
            f'<h2 id="new-link-title">New viewer link: {esc(new_link.label)}</h2>'
            "<p>Copy it now: it is shown only this once. Anyone with it can watch this room until "
            "you revoke it.</p>"
            '<label for="invite-link">Viewer link</label>'
            f'<input id="invite-link" class="link" readonly value="{esc(new_link.url)}">'
            '<button type="button" class="copy" data-copy="invite-link">Copy link</button>'
            '<span class="copied" role="status" aria-live="polite"></span></section>'
        )
    parts.append("<h2>Kiosk</h2>")
    if devices:
        parts.append(_device_rows([(d, the_room.name, online) for d, online in devices], csrf, here))
    else:
        parts.append('<p>No kiosk paired yet. <a href="/activate">Pair one</a> with the code it shows.</p>')
    parts.append("<h2>Viewer links</h2>")
    if invites:
        rows = "".join(
            f'<tr><th scope="row">{esc(i.label)}</th>{_td("Created", when(i.created))}'
            f"{_td('Expires', when(i.expires) if i.expires else 'never')}"
            f"{_td('State', 'revoked' if i.revoked else ('expired' if not i.live(now) else 'active'))}"
            f"{_td('Action', _revoke_invite(i, csrf, now))}</tr>"
            for i in invites
        )
        head = _head("Label", "Created", "Expires", "State", "Action")
        parts.append(f"<table><caption>Viewer links</caption>{head}<tbody>{rows}</tbody></table>")
    else:
        parts.append("<p>No viewer links yet.</p>")
    options = "".join(f'<option value="{v}">{esc(label)}</option>' for v, label in INVITE_EXPIRY_CHOICES)
    parts.append(
        "<h3>New viewer link</h3>"
        f'<form method="post" action="{here}/invites" class="stack">{csrf_input(csrf)}'
        '<label for="label">Label (who it is for)</label>'
        '<input id="label" name="label" maxlength="80" placeholder="Front desk staff">'
        f'<label for="expires">Expires after</label><select id="expires" name="expires_h">{options}</select>'
        '<button type="submit">Create viewer link</button></form>'
    )
    parts.append(
        "<h2>Delete this room</h2>"
        f'<form method="post" action="{here}/delete" class="stack">{csrf_input(csrf)}'
        '<label class="check"><input type="checkbox" name="confirm" value="yes" required> '
        "Also unpair its kiosk and revoke every viewer link</label>"
        '<button type="submit" class="danger">Delete room</button></form>'
    )
    return layout(the_room.name, "".join(parts), user=user, csrf=csrf, error=error)


def _revoke_invite(invite: Invite, csrf: str, now: float) -> str:
    return (
        post_button(f"/invites/{invite.id}/revoke", csrf, "Revoke", danger=True) if invite.live(now) else ""
    )


def activate(user: str, csrf: str, *, code: str = "", error: str = "") -> str:
    body = f"""<p>Enter the code the kiosk shows on its screen.</p>
<form method="post" action="/activate" class="stack">{csrf_input(csrf)}
<label for="code">Code</label>
<input id="code" name="code" value="{esc(code)}" required autocomplete="off" autocapitalize="characters"
 spellcheck="false" inputmode="text" maxlength="32" placeholder="BCDF-GHJK" class="code" autofocus>
<button type="submit">Continue</button>
</form>"""
    return layout("Pair a kiosk", body, user=user, csrf=csrf, error=error)


def confirm(
    user: str, csrf: str, req: PairingRequest, choices: list[tuple[Room, bool]], *, error: str = ""
) -> str:
    code = format_user_code(req.user_code)
    options = "".join(
        f'<option value="{esc(r.id)}" disabled>{esc(r.name)} (has a kiosk)</option>'
        if full
        else f'<option value="{esc(r.id)}">{esc(r.name)}</option>'
        for r, full in choices
    )
    free = any(not full for _, full in choices)
    pick = (
        f'<label for="room">Room</label><select id="room" name="room">{options}</select>'
        if choices
        else '<p>There is no room yet: <a href="/rooms">create one</a> first, then enter the code again.</p>'
    )
    approve = (
        '<button type="submit" name="action" value="approve">Pair with this room</button>' if free else ""
    )
    body = f"""<p>Check that this is the kiosk in front of you before you pair it.</p>
<dl class="facts">
<dt>Code</dt><dd class="code">{esc(code)}</dd>
<dt>Model</dt><dd>{esc(req.model)}</dd>
<dt>Device id</dt><dd>{esc(req.device_id)}</dd>
<dt>Firmware</dt><dd>{esc(req.firmware)}</dd>
<dt>Asked from</dt><dd>{esc(req.address)}</dd>
<dt>Code expires</dt><dd>{when(req.expires)}</dd>
</dl>
<form method="post" action="/activate/confirm" class="stack">{csrf_input(csrf)}
<input type="hidden" name="code" value="{esc(req.user_code)}">
{pick}
{approve}
<button type="submit" name="action" value="deny" class="danger">Refuse</button>
</form>"""
    return layout("Confirm the kiosk", body, user=user, csrf=csrf, error=error)


def activated(user: str, csrf: str, room_name: str | None) -> str:
    if room_name is None:
        text = "<p>Refused. The kiosk shows that pairing was refused.</p>"
        title = "Pairing refused"
    else:
        text = (
            f"<p>The kiosk is paired with <strong>{esc(room_name)}</strong>. It connects within a few "
            'seconds.</p><p><a href="/rooms">Back to the rooms</a></p>'
        )
        title = "Kiosk paired"
    return layout(title, text, user=user, csrf=csrf)
