"""Real filesystems for disk-fault tests: a tmpfs mounted under the test's directory, that a test
fills to the last byte, empties again, or remounts read-only and back; and a FUSE passthrough
mount (fault_fs.py) that answers EIO or takes seconds per fsync when told to.

Mounting needs root (the CI machines run the tests as root). Where mounting is refused the
test is skipped with the reason, except under `CI=true`, where a skip would hide that the
faults were never exercised: there it fails.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
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


class FaultDisk:
    """A FUSE mount at `mountpoint` passing through to `backing`, with EIO and slow fsyncs on
    demand (tests/interop/fault_fs.py). Like SmallDisk, it skips, or fails under CI=true, where
    FUSE cannot be mounted."""

    def __init__(self, root: Path) -> None:
        self.backing = root / "backing"
        self.mountpoint = root / "mount"
        self.control = root / "faults.json"
        self.log = root / "operations.log"
        self.stderr = root / "fault_fs.stderr.log"
        for directory in (self.backing, self.mountpoint):
            directory.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        script = Path(__file__).with_name("fault_fs.py")
        with open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(script), str(self.backing), str(self.mountpoint), str(self.control), str(self.log)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + 15
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                reason = f"cannot mount a FUSE filesystem at {self.mountpoint}: {self.stderr.read_text()[-2000:]}"
                self.stop()
                if os.environ.get("CI") == "true":
                    pytest.fail(f"{reason} (CI=true: disk-fault tests must run)")
                pytest.skip(reason)
            time.sleep(0.05)

    def set(self, *, eio: tuple[str, ...] = (), fsync_delay: float = 0.0) -> None:
        """Replaces the faults in force (none when called without arguments)."""
        temporary = self.control.with_suffix(".tmp")
        temporary.write_text(json.dumps({"eio": list(eio), "fsync_delay": fsync_delay}))
        temporary.replace(self.control)

    def operations(self) -> list[list[str]]:
        """The logged operations so far, each split into words (`["fsync", path, "EIO"]`)."""
        return [line.split() for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no VmRSS")
