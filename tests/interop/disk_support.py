"""A real small filesystem for disk-fault tests: a tmpfs mounted under the test's directory, that
a test fills to the last byte, empties again, or remounts read-only and back.

Mounting needs root (the CI machines run the tests as root). Where mounting is refused the
test is skipped with the reason, except under `CI=true`, where a skip would hide that the
faults were never exercised: there it fails.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Optional

import pytest

PAGE = 4096


class SmallDisk:
    """A tmpfs of `size` bytes at `mountpoint`."""

    def __init__(self, mountpoint: Path, size: int) -> None:
        self.mountpoint = mountpoint
        self.size = size
        self.filler = mountpoint / "filler"
        mountpoint.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            reason = f"cannot mount a tmpfs at {mountpoint}: {result.stderr.strip() or result.returncode}"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{reason} (CI=true: disk-fault tests must run)")
            pytest.skip(reason)

    def unmount(self) -> None:
        # Lazy: a process the test failed to stop must not keep the mount (and the test) alive.
        subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)

    # ---- space

    def free_bytes(self) -> int:
        stats = os.statvfs(self.mountpoint)
        return stats.f_bavail * stats.f_frsize

    def used_bytes(self) -> int:
        stats = os.statvfs(self.mountpoint)
        return (stats.f_blocks - stats.f_bfree) * stats.f_frsize

    def file_bytes(self) -> int:
        """What the files that can be seen take, in pages: with `used_bytes`, shows space held
        by files that were deleted but are still open."""
        total, seen = 0, set()
        for path in self.mountpoint.rglob("*"):
            stat = path.lstat()
            if path.is_file() and not path.is_symlink() and stat.st_ino not in seen:
                seen.add(stat.st_ino)  # a hard link is counted once
                total += -(-stat.st_size // PAGE) * PAGE
        return total

    def fill(self) -> int:
        """Writes a filler file until the filesystem has not one byte left; returns its size."""
        written = 0
        with open(self.filler, "ab", buffering=0) as filler:
            for chunk in (1 << 20, PAGE, 1):
                block = b"\0" * chunk
                while True:
                    try:
                        n = filler.write(block)
                    except OSError as err:
                        if err.errno != errno.ENOSPC:
                            raise
                        break
                    written += n or 0
                    if not n:
                        break
        assert self.free_bytes() == 0, f"{self.mountpoint} still has {self.free_bytes()} bytes free after filling"
        return written

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)

    # ---- read-only

    def remount(self, mode: str, timeout: float = 15.0) -> None:
        """`mode` "ro" or "rw". A read-only remount is refused (EBUSY) while a file is open for
        writing on the filesystem: retried until the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run(
                ["mount", "-o", f"remount,{mode}", str(self.mountpoint)], capture_output=True, text=True
            )
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"cannot remount {self.mountpoint} {mode}: {result.stderr.strip()}")
            time.sleep(0.05)


def metric_total(port: int, name: str, **labels: str) -> Optional[float]:
    """The sum of the samples of `name` whose labels include `labels`; None when /metrics cannot
    be read."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    total = 0.0
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total
