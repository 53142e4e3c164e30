"""`dropreel install-service`: put the unit and its companions in place (under --root for
packaging or a test), create the config from the commented example without ever
overwriting one, and tell the operator the next two commands."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _templates() -> Path:
    checkout = Path(__file__).resolve().parents[1] / "systemd"
    if (checkout / "dropreel.service").exists():
        return checkout
    return Path(sys.prefix) / "share" / "dropreel" / "systemd"  # from the wheel's data-files


TEMPLATES = _templates()
# (template, destination under root, mode, overwrite?)
FILES = [
    ("dropreel.service", "etc/systemd/system/dropreel.service", 0o644, True),
    ("dropreel.sysusers", "etc/sysusers.d/dropreel.conf", 0o644, True),
    ("dropreel.tmpfiles", "etc/tmpfiles.d/dropreel.conf", 0o644, True),
    ("dropreel.toml.example", "etc/dropreel/dropreel.toml", 0o640, False),
]


def executable() -> Path:
    """The `dropreel` script beside this interpreter (the virtualenv it was installed to)."""
    script = Path(sys.executable).parent / "dropreel"
    return script if script.exists() else Path(shutil.which("dropreel") or script)


def render_unit(exec_path: Path) -> str:
    return (TEMPLATES / "dropreel.service").read_text().replace("@EXEC@", str(exec_path))


def install(root: Path, exec_path: Path) -> list[str]:
    """Write the files; returns what was done, one line each."""
    done: list[str] = []
    for template, rel, mode, overwrite in FILES:
        dest = root / rel
        if dest.exists() and not overwrite:
            done.append(f"kept     {dest} (exists)")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        text = (
            render_unit(exec_path)
            if template == "dropreel.service"
            else (TEMPLATES / template).read_text()
        )
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        tmp.replace(dest)
        done.append(f"wrote    {dest}")
    key = root / "etc/dropreel/api_key"
    if not key.exists():
        # Empty means "no key" (offline renderer); LoadCredential= needs the file to exist.
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        done.append(f"wrote    {key} (empty: put a Kling key here, mode 0600)")
    return done


def cmd_install_service(args: argparse.Namespace) -> int:
    exec_path = Path(args.exec_path) if args.exec_path else executable()
    if any(str(exec_path).startswith(p) for p in ("/home/", "/root/", "/run/user/")):
        print(
            f"dropreel: {exec_path} is under a home directory, which the unit hides "
            "(ProtectHome=yes); install dropreel under /opt, e.g. "
            "python3 -m venv /opt/dropreel && /opt/dropreel/bin/pip install <checkout>",
            file=sys.stderr,
        )
        if not args.root:
            return 1
    root = Path(args.root or "/")
    for line in install(root, exec_path):
        print(line)
    if root == Path("/"):
        for cmd in (
            ["systemd-sysusers", "/etc/sysusers.d/dropreel.conf"],
            ["systemd-tmpfiles", "--create", "/etc/tmpfiles.d/dropreel.conf"],
            ["systemctl", "daemon-reload"],
        ):
            result = subprocess.run(cmd, capture_output=True, text=True)
            status = "ok" if result.returncode == 0 else f"FAILED: {result.stderr.strip()}"
            print(f"ran      {' '.join(cmd)}: {status}")
    print(
        "\nNext:\n"
        "  systemctl enable --now dropreel\n"
        "  journalctl -u dropreel -f\n"
        "Then drop images into /srv/dropreel/drop (add people to group dropreel:\n"
        "usermod -aG dropreel <user>), and see `dropreel --db /var/lib/dropreel/dropreel.db "
        "status`."
    )
    return 0
