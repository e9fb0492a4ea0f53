"""Boot the cached rootfs with systemd as PID 1 in private namespaces, with the appliance installed.

systemd-nspawn does not work on these machines; this does what it would, by hand:

    host:  a cgroup v2 of our own (made and joined in a private mount of cgroup2), then
           unshare --pid --fork --mount --cgroup --uts --ipc --net --kill-child
    in the new namespaces, before pivot_root:
           overlay (per-boot upper dir) over [the appliance layer] over [the cached rootfs]
           the repository and the host venv's site-packages bound read-only at fixed paths
           a fresh /proc (of the new PID namespace) with /proc/sys read-only, /sys read-only,
           a tmpfs /dev with the basic nodes, tmpfs /run and /tmp, and cgroup2 on /sys/fs/cgroup
           (inside our cgroup namespace, so systemd's root is our cgroup)
    then   pivot_root, exec /lib/systemd/systemd: PID 1 of the new PID namespace.

Why cgroup v2 and not the host's cgroup v1 with a name=systemd hierarchy: given the v1 hierarchies
of this host, systemd mounts every v1 controller and a cgroup2 itself and creates init.scope and
system.slice in the host's own devices, pids and v2 hierarchies, outside any namespace, where
two test runs would collide. A cgroup2 mount rooted at our own cgroup keeps it all in one
subtree that the teardown removes, and is what a Pi runs (unified hierarchy): DeviceAllow= and
IPAddressDeny= are enforced with BPF as they are there.

The appliance layer is a plain directory of files laid out as on a device: the units in
/etc/systemd/system (enabled with `systemctl --root`), sysusers.d and tmpfiles.d, the config
in /etc/appliance. Commands run inside through nsenter. PID 1 in a PID namespace ignores
SIGTERM, so the teardown is SIGKILL: unshare was started with --kill-child, and killing it takes
PID 1 and with it every process of the namespace; the mounts go with the mount namespace.

The host's CLOCK_MONOTONIC is the namespace's too (no time namespace): systemd's *Monotonic
timestamps and the scenario clock of the sims can be compared with time.monotonic() here.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import rootfs_cache

REPO = Path(__file__).resolve().parents[2]
UNITS_DIR = REPO / "systemd"
NSENTER_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_PAGER": "cat",
    "HOME": "/root",
}
# Units of a stock Debian boot that have nothing to do here and would only touch the host (kernel
# modules, sysctls) or fail for want of a terminal or D-Bus.
MASKED = (
    "systemd-modules-load.service",
    "systemd-sysctl.service",
    "systemd-logind.service",
    "systemd-remount-fs.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "fstrim.timer",
    "getty@tty1.service",
    "console-getty.service",
    "systemd-firstboot.service",
)


class Machine:
    """One boot of the rootfs. Use as a context manager; `layer` is filled before `boot()`."""

    def __init__(self, rootfs: Path, workdir: Path | None = None) -> None:
        self.rootfs = rootfs
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="appliance-systemd-", dir="/var/tmp"))
        self.layer = self.workdir / "layer"
        self.upper = self.workdir / "upper"
        self.console = self.workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.subscriber: subprocess.Popen[bytes] | None = None  # a test's bus client inside
        self.pid1 = 0  # host PID of PID 1
        # Our cgroup, a child of the cgroup2 root (the host uses cgroup v1 and does not mount it).
        self.cgroup_name = f"appliance-test-{os.getpid()}-{id(self) & 0xFFFF:x}"
        for d in (self.layer, self.upper, self.workdir / "work", self.workdir / "merged"):
            d.mkdir(parents=True, exist_ok=True)

    # --- the appliance layer ------------------------------------------------------------------

    def install_units(self, units_dir: Path = UNITS_DIR, mask: Iterable[str] = ()) -> list[str]:
        """The repository's units as on a device, enabled: what the image build does. Units in
        `mask` (daemons not in this build) are masked, so appliance.target's Wants= skip them."""
        system = self.layer / "etc/systemd/system"
        system.mkdir(parents=True, exist_ok=True)
        names = sorted(
            p.name
            for p in units_dir.iterdir()
            if p.suffix in (".service", ".socket", ".target", ".path") and p.is_file()
        )
        for name in names:
            shutil.copy2(units_dir / name, system / name)
        for kind in ("sysusers.d", "tmpfiles.d"):
            target = self.layer / "etc" / kind
            target.mkdir(parents=True, exist_ok=True)
            for conf in (units_dir / kind).glob("*.conf"):
                shutil.copy2(conf, target / conf.name)
        subprocess.run(
            ["systemctl", f"--root={self.layer}", "enable", "--quiet", *names],
            check=True,
            capture_output=True,
        )
        for unit in (*MASKED, *mask):
            link = system / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        return names

    def write(self, path: str, text: str, mode: int = 0o644) -> Path:
        """A file in the layer, at its path inside the machine."""
        file = self.layer / path.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        file.chmod(mode)
        return file

    def host_path(self, path: str) -> Path:
        """Where a file the machine wrote lies on the host (the overlay's upper dir)."""
        return self.upper / path.lstrip("/")

    # --- boot and teardown --------------------------------------------------------------------

    def _boot_script(self) -> str:
        site = sysconfig.get_paths()["purelib"]
        _let_others_traverse(REPO, Path(site))
        m = self.workdir / "merged"
        q = shlex.quote
        overlay = f"lowerdir={self.layer}:{self.rootfs},upperdir={self.upper},workdir={self.workdir / 'work'}"
        return f"""set -eu
mount -t overlay overlay -o {q(overlay)} {q(str(m))}
mount --bind -o ro {q(str(REPO))} {q(str(m))}{rootfs_cache.SRC}
mount --bind -o ro {q(site)} {q(str(m))}{rootfs_cache.SITE}
mount -t proc -o nosuid,nodev,noexec proc {q(str(m))}/proc
mount --bind {q(str(m))}/proc/sys {q(str(m))}/proc/sys
mount -o remount,bind,ro {q(str(m))}/proc/sys
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs {q(str(m))}/sys
# cgroup v2 (as on Raspberry Pi OS Bookworm), seen through our cgroup namespace: its root is the
# cgroup the launcher made for this boot, so systemd manages that subtree and nothing else.
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 {q(str(m))}/sys/fs/cgroup
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs {q(str(m))}/run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {q(str(m))}/tmp
mount -t tmpfs -o mode=755,nosuid tmpfs {q(str(m))}/dev
cd {q(str(m))}/dev
mknod -m 666 null c 1 3; mknod -m 666 zero c 1 5; mknod -m 666 full c 1 7
mknod -m 666 random c 1 8; mknod -m 666 urandom c 1 9; mknod -m 666 tty c 5 0
mkdir pts shm; mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts pts; ln -s pts/ptmx ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs shm
ln -s /proc/self/fd fd
ln -s /proc/self/fd/0 stdin; ln -s /proc/self/fd/1 stdout; ln -s /proc/self/fd/2 stderr
# PID 1's console: a file on the host (its messages before journald is up).
touch console; mount --bind {q(str(self.console))} console
# pivot_root, not chroot: the kernel refuses new user namespaces (PrivateUsers=) to a chrooted
# process, and systemd must see its root as the mount namespace's root.
cd {q(str(m))}
pivot_root . mnt
umount -l /mnt
cd /
# container=: systemd then skips what a container must not do (udev, hardware units).
exec /usr/bin/env -i container=appliance-test /lib/systemd/systemd --log-level=info
"""

    def boot(self, timeout: float = 60.0) -> None:
        script = self.workdir / "boot.sh"
        script.write_text(self._boot_script())
        self.console.touch()
        cg2 = self.workdir / "cgroup2"
        cg2.mkdir(exist_ok=True)
        q = shlex.quote
        mine = q(f"{cg2}/{self.cgroup_name}")
        # In a private mount namespace (so the host's mounts stay as they are): mount cgroup2,
        # make our cgroup and move in, then the namespaces whose cgroup root is that cgroup.
        launcher = (
            f"set -e; mount -t cgroup2 cgroup2 {q(str(cg2))}; mkdir {mine}; "
            f"echo $$ > {mine}/cgroup.procs; umount {q(str(cg2))}; "
            "exec unshare --pid --fork --kill-child --mount --cgroup --uts --ipc --net "
            f"--propagation private /bin/sh {q(str(script))}"
        )
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", launcher],
            stdin=subprocess.DEVNULL,
            stdout=open(self.workdir / "unshare.log", "wb"),  # noqa: SIM115 - lives with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the boot failed: {self.diagnostics()}")
            if not self.pid1:
                self.pid1 = self._child_of(self.proc.pid)
            if self.pid1:
                state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"systemd did not finish booting in {timeout:g} s: {self.diagnostics()}")

    @staticmethod
    def _child_of(pid: int) -> int:
        """unshare's child that is PID 1 of its own PID namespace (not a mount run on the way)."""
        with contextlib.suppress(OSError, ValueError):
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                status = Path(f"/proc/{child}/status").read_text()
                nspid = next(ln for ln in status.splitlines() if ln.startswith("NSpid:")).split()
                if len(nspid) > 2 and nspid[-1] == "1":
                    return int(child)
        return 0

    def shutdown(self) -> None:
        """SIGKILL: PID 1 of a PID namespace ignores SIGTERM, and --kill-child passes it on."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self.pid1:
            deadline = time.monotonic() + 10
            while Path(f"/proc/{self.pid1}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        # The cgroups systemd made under ours, deepest first, once their processes are gone.
        cg2 = self.workdir / "cgroup2"
        subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                f"mount -t cgroup2 cgroup2 {cg2} || exit 0; d={cg2}/{self.cgroup_name}; "
                "for i in $(seq 300); do [ -d $d ] || exit 0; "
                "find $d -depth -type d -exec rmdir {} + 2>/dev/null; sleep 0.1; done; exit 1",
            ],
            check=False,
            capture_output=True,
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # --- inside -------------------------------------------------------------------------------

    def run(
        self,
        argv: Iterable[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A command inside the machine's namespaces and root, as root."""
        assert self.pid1, "not booted"
        cmd = ["nsenter", "-t", str(self.pid1), "-m", "-p", "-u", "-i", "-n", "-r", "-w", *argv]
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env={**NSENTER_ENV, **(env or {})},
            input=input,
        )

    def popen(
        self, argv: Iterable[str], log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        cmd = ["nsenter", "-t", str(self.pid1), "-m", "-p", "-u", "-i", "-n", "-r", "-w", *argv]
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
            env={**NSENTER_ENV, **(env or {})},
        )

    @staticmethod
    def kill_popen(proc: subprocess.Popen[bytes]) -> None:
        """End a popen(): nsenter forked the command into the machine's PID namespace, so its
        child is killed first (by its host PID), then nsenter itself."""
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(child), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", f"--property={','.join(props)}", "--", unit]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> str:
        return self.run(["systemctl", *args], check=check, timeout=timeout).stdout

    def host_pid(self, ns_pid: int) -> int:
        """The host PID of the process the machine knows as ns_pid (for os.kill from here)."""
        pidns = os.readlink(f"/proc/{self.pid1}/ns/pid")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, StopIteration):
                if os.readlink(entry / "ns/pid") != pidns:
                    continue
                status = (entry / "status").read_text()
                nspids = next(ln for ln in status.splitlines() if ln.startswith("NSpid:")).split()[1:]
                if int(nspids[-1]) == ns_pid:
                    return int(entry.name)
        raise LookupError(f"no process {ns_pid} in the machine")

    def diagnostics(self) -> str:
        parts = []
        for name in ("unshare.log", "console.log"):
            with contextlib.suppress(OSError):
                text = (self.workdir / name).read_text(errors="replace")
                parts.append(f"--- {name} (last lines) ---\n" + "\n".join(text.splitlines()[-40:]))
        return "\n".join(parts) or "(no output)"

    def journal(self, *args: str) -> str:
        return self.run(["journalctl", "--no-pager", *args], check=False).stdout


def _let_others_traverse(repo: Path, site: Path) -> None:
    """The daemons run as the `appliance` user and read the repository and the venv through
    read-only bind mounts, which keep the directories' modes. A checkout in a 0700 directory
    (mktemp -d) would hide them, so give others read and search on the repository's own
    directories down to the site-packages; files keep their modes, nothing else changes."""
    dirs = [repo]
    if site.is_relative_to(repo):
        part = repo
        for name in site.relative_to(repo).parts:
            part = part / name
            dirs.append(part)
    for d in dirs:
        mode = d.stat().st_mode & 0o7777
        if mode & 0o005 != 0o005:
            d.chmod(mode | 0o005)
