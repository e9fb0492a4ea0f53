"""About: firmware and library versions, the device, where its files are."""

from __future__ import annotations

import importlib.metadata
import platform

from aiohttp import web

from appliance import __version__
from appliance.setup import system, tls
from appliance.setup.app import ctx_of, render
from appliance.setup.html import h, join

PACKAGES = ("aiohttp", "msgspec", "pydantic", "numpy", "pygame", "segno", "aiortc", "av", "systemd-python")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


async def about_page(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    rows: list[tuple[str, str]] = [
        ("firmware", f"appliance {__version__}"),
        ("device id", system.device_id()),
        ("hardware", system.pi_model() or platform.machine()),
        ("operating system", system.os_name()),
        ("kernel", system.kernel()),
        ("Python", platform.python_version()),
        *((p, _version(p)) for p in PACKAGES),
        ("config file", str(ctx.config_file)),
        ("state directory", str(ctx.config.paths.state_dir)),
        ("under systemd", "yes" if ctx.system.active else "no"),
    ]
    if ctx.cert_path is not None:
        rows.append(("TLS certificate SHA-256", tls.fingerprint(ctx.cert_path) or "unreadable"))
    body = h(
        '<table id="about"><tbody>{rows}</tbody></table>',
        rows=join(h("<tr><th scope=row>{k}</th><td>{v}</td></tr>", k=k, v=v) for k, v in rows),
    )
    return render(request, "About", body, current="/about")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/about", about_page)
