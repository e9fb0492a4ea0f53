"""A minimal Debian rootfs for booting the appliance's units under a real systemd, built once.

debootstrap (variant minbase) with only systemd and python3 (and one library): about 40 s and
290 MB on a fresh machine (2-core VM, Debian's CDN). The result is cached under
/var/cache/appliance-test-rootfs/<key>/rootfs, where the key hashes everything that decides its
contents (suite, architecture, package list, mirror, this module's BUILD_VERSION), so a changed
package list builds a new one and an unchanged one is reused. Tests never write into the cache:
each boot puts an overlay on top of it.

The appliance is not installed into the rootfs. Its venv there, /opt/appliance/venv, is made by
the rootfs's own python3 (same 3.11 ABI as the host's) and sees, through one .pth file:
    /opt/appliance/src             the repository, bind-mounted read-only at boot
    /opt/appliance/site-packages   the host .venv's site-packages, bind-mounted read-only
so the units' ExecStart=/opt/appliance/venv/bin/appliance runs the code under test with the
dependencies `make` installed, without a second pip install. Fixed paths rather than the host's
own: a checkout under /home or /root would be hidden from the daemons by ProtectHome=yes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
# systemd is PID 1 and brings journald, sysusers and tmpfiles; python3 runs the daemons;
# libglib2.0-0 is the one system library the host venv's wheels load that minbase lacks (pygame's
# SDL2_mixer links libglib/libgthread). Nothing else: no dbus (systemctl as root talks to PID 1
# over its private socket), no udev.
PACKAGES = ("systemd", "python3", "libglib2.0-0")
# Bump when what happens after debootstrap changes, so old caches are not reused.
BUILD_VERSION = 1
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CACHE_ROOT = Path(os.environ.get("APPLIANCE_TEST_ROOTFS_CACHE", "/var/cache/appliance-test-rootfs"))

VENV = "/opt/appliance/venv"
SRC = "/opt/appliance/src"
SITE = "/opt/appliance/site-packages"

Log = Callable[[str], None]


def host_python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def host_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror for SUITE (its apt configuration), so the rootfs comes from where
    the host's packages come from; the public mirror when the host names none."""
    candidates: list[str] = []
    for file in sorted([sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]):
        with contextlib.suppress(OSError):
            text = file.read_text()
            if file.suffix == ".sources":
                for stanza in re.split(r"\n\s*\n", text):
                    fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                    suites = fields.get("Suites", "").split()
                    if SUITE in suites and "main" in fields.get("Components", "").split():
                        candidates += fields.get("URIs", "").split()
            else:
                for m in re.finditer(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", text, re.M):
                    if m.group(2) == SUITE and "main" in m.group(3).split():
                        candidates.append(m.group(1))
    for uri in candidates:
        if uri.startswith(("http://", "https://", "file:/")) and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def cache_key(mirror: str, packages: tuple[str, ...] = PACKAGES) -> str:
    spec = {
        "suite": SUITE,
        "variant": VARIANT,
        "arch": arch(),
        "packages": sorted(packages),
        "mirror": mirror,
        "build": BUILD_VERSION,
        "python": host_python_tag(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def unavailable() -> str | None:
    """Why a rootfs cannot be built or booted here, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, mount and PID/mount namespaces)"
    for tool in ("debootstrap", "unshare", "nsenter", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs it through .ci/install-debs)"
    if not Path("/sys/fs/cgroup/systemd").is_dir() and not Path("/sys/fs/cgroup/cgroup.procs").exists():
        return "no cgroup file system mounted at /sys/fs/cgroup"
    try:
        subprocess.run(["unshare", "--pid", "--fork", "--mount", "true"], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        return f"cannot create PID and mount namespaces here: {exc.stderr.decode().strip()}"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # another test run building the same rootfs: wait for it
        yield


def ensure_rootfs(log: Log = print) -> Path:
    """The cached rootfs for the current package list, built first if missing."""
    mirror = host_mirror()
    key = cache_key(mirror)
    home = CACHE_ROOT / key
    rootfs = home / "rootfs"
    stamp = home / "built.json"
    with _locked(CACHE_ROOT / f".{key}.lock"):
        if stamp.exists():
            log(f"rootfs: cached at {rootfs} ({json.loads(stamp.read_text()).get('build_s')} s to build)")
            return rootfs
        started = time.monotonic()
        work = CACHE_ROOT / f".{key}.building"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        # debootstrap keeps its downloads here, so a rebuild after a BUILD_VERSION bump or a
        # cache wipe of one key does not download the same .debs again.
        debs = CACHE_ROOT / "debs"
        debs.mkdir(exist_ok=True)
        log(f"rootfs: debootstrap {SUITE} ({VARIANT} + {', '.join(PACKAGES)}) from {mirror} ...")
        cmd = [
            "debootstrap",
            f"--variant={VARIANT}",
            f"--include={','.join(PACKAGES)}",
            f"--cache-dir={debs}",
            SUITE,
            str(work / "rootfs"),
            mirror,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise RuntimeError(f"debootstrap failed ({result.returncode}):\n{tail}")
        _install_venv(work / "rootfs")
        # The .debs are in the download cache above; the rootfs keeps none.
        for deb in (work / "rootfs/var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        build_s = round(time.monotonic() - started, 1)
        (work / "built.json").write_text(
            json.dumps({"build_s": build_s, "packages": PACKAGES, "mirror": mirror, "suite": SUITE})
        )
        shutil.rmtree(home, ignore_errors=True)
        work.rename(home)
        log(f"rootfs: built in {build_s} s at {rootfs}")
        return rootfs


def _install_venv(root: Path) -> None:
    version = subprocess.run(
        ["chroot", str(root), "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if version != host_python_tag():
        raise RuntimeError(
            f"the rootfs has Python {version}, the host venv {host_python_tag()}: the host's compiled "
            "packages cannot be shared"
        )
    # --without-pip: nothing is installed into it, so Debian's python3-venv is not needed.
    subprocess.run(["chroot", str(root), "python3", "-m", "venv", "--without-pip", VENV], check=True)
    site = root / VENV.lstrip("/") / f"lib/python{version}/site-packages"
    # One path line, then addsitedir so the host venv's own .pth files (setuptools' editable
    # finder among them) are processed too. The repository comes first on sys.path, so
    # `appliance` is the checkout at /opt/appliance/src whatever the editable finder says.
    (site / "appliance-test.pth").write_text(f"{SRC}\nimport site; site.addsitedir({SITE!r})\n")
    script = root / VENV.lstrip("/") / "bin/appliance"
    # What pip writes for the [project.scripts] entry point.
    script.write_text(f"#!{VENV}/bin/python\nimport sys\nfrom appliance.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    for path in (SRC, SITE):
        (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
