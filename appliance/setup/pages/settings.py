"""Screening settings: threshold, hysteresis, units, distance window, language, door relay.

Validated on the server with the config model; written atomically into the config file,
comments kept (configedit); the status screen applies its part within seconds, the
screening daemon on restart, which the page offers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiohttp import web

from appliance.config import parse_config
from appliance.errors import ConfigError
from appliance.setup import configedit, forms
from appliance.setup.app import ctx_of, render, session_of
from appliance.setup.auth import Session
from appliance.setup.html import EMPTY, Markup, csrf_field, h, join, notice

log = logging.getLogger(__name__)


def _input(f: forms.Field, value: str) -> Markup:
    ident = f.name.replace(".", "-").replace("_", "-")
    if f.kind == "choice":
        options = join(
            h('<option value="{v}"{s}>{t}</option>', v=v, t=t, s=Markup(" selected" if v == value else ""))
            for v, t in f.choices
        )
        return h('<select name="{n}" id="{i}">{o}</select>', n=f.name, i=ident, o=options)
    if f.kind == "flag":
        return h(
            '<input type="checkbox" name="{n}" id="{i}" value="on"{c}>',
            n=f.name,
            i=ident,
            c=Markup(" checked" if value else ""),
        )
    if f.kind == "pin":
        return h(
            '<input name="{n}" id="{i}" value="{v}" inputmode="numeric" placeholder="none" maxlength="4">',
            n=f.name,
            i=ident,
            v=value,
        )
    return h(
        '<input name="{n}" id="{i}" value="{v}" inputmode="decimal" maxlength="16"> {u}',
        n=f.name,
        i=ident,
        v=value,
        u=f.unit,
    )


def _form(request: web.Request, values: Mapping[str, str], errors: Mapping[str, str]) -> Markup:
    rows = join(
        h(
            '<div class="field{bad}"><label for="{i}">{label}</label>{input}<small>{help}</small>{err}</div>',
            bad=Markup(" invalid" if f.name in errors else ""),
            i=f.name.replace(".", "-").replace("_", "-"),
            label=f.label,
            input=_input(f, values.get(f.name, "")),
            help=f.help,
            err=h('<strong class="error" data-error="{n}">{e}</strong>', n=f.name, e=errors[f.name])
            if f.name in errors
            else Markup(""),
        )
        for f in forms.FIELDS
    )
    general = notice("error", errors["_form"]) if "_form" in errors else Markup("")
    return h(
        '{general}<form method="post" action="/settings" class="settings">{csrf}{rows}'
        '<button type="submit" id="save-settings">Save</button></form>',
        general=general,
        csrf=csrf_field(session_of(request)),
        rows=rows,
    )


async def settings_page(request: web.Request, message: Markup = EMPTY) -> web.Response:
    ctx = ctx_of(request)
    try:
        _, data = configedit.read_data(ctx.config_file)
        config = parse_config(data, str(ctx.config_file))
    except ConfigError as exc:
        body = notice("error", f"The config file cannot be used: {exc}. Fix it by hand first.")
        return render(request, "Settings", body, current="/settings", status=500)
    body = h(
        "{m}<p>Config file: <code>{path}</code></p>{form}",
        m=message,
        path=ctx.config_file,
        form=_form(request, forms.current_values(config), {}),
    )
    return render(request, "Settings", body, current="/settings")


def _applied(keys: list[str], session: Session) -> Markup:
    live = sorted(k for k in keys if k in forms.LIVE)
    restart = sorted({forms.RESTART[k] for k in keys if k in forms.RESTART})
    parts = [f"Saved: {', '.join(keys)}."]
    if live:
        parts.append(f"The kiosk's screen applies {', '.join(live)} within a few seconds.")
    if restart:
        parts.append(f"Takes effect when the {', '.join(restart)} daemon restarts.")
    text = " ".join(parts)
    if not restart:
        return notice("ok", text)
    buttons = join(
        h(
            '<form method="post" action="/maintenance/restart" class="inline">{csrf}'
            '<input type="hidden" name="daemon" value="{d}"><input type="hidden" name="confirm" value="yes">'
            '<button type="submit" id="restart-{d}">Restart the {d} daemon now</button></form>',
            csrf=csrf_field(session),
            d=d,
        )
        for d in restart
    )
    return h('<div class="notice ok" role="status"><p>{t}</p>{b}</div>', t=text, b=buttons)


async def save(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    form = await request.post()
    values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    async with ctx.config_lock:
        try:
            _, data = configedit.read_data(ctx.config_file)
            old = parse_config(data, str(ctx.config_file))
        except ConfigError as exc:
            body = notice("error", f"Nothing saved: the config file cannot be used: {exc}.")
            return render(request, "Settings", body, current="/settings", status=500)
        new, errors = forms.parse(values, data)
        if new is None:
            body = h(
                "{n}{form}",
                n=notice("error", "Nothing saved: correct the fields marked below."),
                form=_form(request, values, errors),
            )
            return render(request, "Settings", body, current="/settings", status=400)
        changes = forms.changed(old, new)
        if not changes:
            return await settings_page(request, notice("info", "Nothing changed."))
        try:
            # fsync on an SD card can take a while: off the event loop.
            await asyncio.to_thread(configedit.write_changes, ctx.config_file, changes)
        except ConfigError as exc:
            # The form as submitted, not the file's values: what was typed is not lost.
            body = h(
                "{n}{form}",
                n=notice("error", f"Nothing saved: {exc}."),
                form=_form(request, values, {}),
            )
            return render(request, "Settings", body, current="/settings", status=500)
    keys = [f"{s}.{k}" for s, k in changes]
    log.info("settings changed: %s", ", ".join(keys))
    return await settings_page(request, _applied(keys, session_of(request)))


async def get(request: web.Request) -> web.Response:
    return await settings_page(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/settings", get)
    app.router.add_post("/settings", save)
