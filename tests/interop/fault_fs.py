"""A FUSE filesystem that passes everything through to a backing directory and fails or slows
what a control file asks for: the disk-fault tests' way to produce EIO and a slow fsync on a
real mount (no device-mapper on these machines).

Run as its own process, in the foreground:

    python fault_fs.py BACKING MOUNTPOINT CONTROL LOG

CONTROL is a JSON file, re-read whenever it changes:

    {"eio": ["write", "fsync"], "fsync_delay": 2.5}

`eio` lists the operations that fail with EIO (any of create, write, fsync, fsyncdir, link,
rename); `fsync_delay` is how many seconds each fsync takes. A missing or empty file means no
faults. LOG gets one line per create, fsync, link, rename and unlink: `op path[ -> path] result`,
so a test can check what hubcap did with a file after its fsync failed.

Built on mfusepy (libfuse 3 through ctypes); mounting needs root and /dev/fuse.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time
from typing import Any

import mfusepy as fuse

STAT_FIELDS = ("st_gid", "st_mode", "st_nlink", "st_size", "st_uid", "st_ino", "st_blocks")
TIME_FIELDS = ("st_atime", "st_ctime", "st_mtime")  # in nanoseconds (use_ns)


class FaultFs(fuse.Operations):
    use_ns = True

    def __init__(self, backing: str, control: str, log: str) -> None:
        self.backing = os.path.realpath(backing)
        self.control = control
        self.control_mtime: int | None = None
        self.faults: dict[str, Any] = {}
        self.log_file = open(log, "a", buffering=1)
        self.log_lock = threading.Lock()

    # ---- faults and log

    def _faults(self) -> dict[str, Any]:
        try:
            mtime = os.stat(self.control).st_mtime_ns
        except FileNotFoundError:
            self.faults, self.control_mtime = {}, None
            return self.faults
        if mtime != self.control_mtime:
            try:
                with open(self.control) as file:
                    text = file.read()
                self.faults = json.loads(text) if text.strip() else {}
                self.control_mtime = mtime
            except (OSError, ValueError):
                pass  # written half-way: keep the last faults until it is whole
        return self.faults

    def _fail(self, op: str) -> bool:
        return op in self._faults().get("eio", [])

    def _log(self, line: str) -> None:
        with self.log_lock:
            self.log_file.write(line + "\n")

    def _path(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    # ---- metadata

    def access(self, path, amode):
        if not os.access(self._path(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def getattr(self, path, fh=None):
        st = os.fstat(fh) if fh is not None else os.lstat(self._path(path))
        attrs = {key: getattr(st, key) for key in STAT_FIELDS}
        attrs.update({key: getattr(st, key + "_ns") for key in TIME_FIELDS})
        return attrs

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._path(path))

    def readlink(self, path):
        return os.readlink(self._path(path))

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        return {
            key: getattr(st, key)
            for key in (
                "f_bavail",
                "f_bfree",
                "f_blocks",
                "f_bsize",
                "f_favail",
                "f_ffree",
                "f_files",
                "f_flag",
                "f_frsize",
                "f_namemax",
            )
        }

    def chmod(self, path, mode):
        return os.chmod(self._path(path), mode)

    def chown(self, path, uid, gid):
        return os.chown(self._path(path), uid, gid)

    def utimens(self, path, times=None):
        return os.utime(self._path(path), ns=times)

    # ---- directories and names

    def mkdir(self, path, mode):
        return os.mkdir(self._path(path), mode)

    def rmdir(self, path):
        return os.rmdir(self._path(path))

    def unlink(self, path):
        os.unlink(self._path(path))
        self._log(f"unlink {path} ok")

    def symlink(self, target, source):
        return os.symlink(source, self._path(target))

    def link(self, target, source):
        if self._fail("link"):
            self._log(f"link {source} -> {target} EIO")
            raise fuse.FuseOSError(errno.EIO)
        os.link(self._path(source), self._path(target))
        self._log(f"link {source} -> {target} ok")

    def rename(self, old, new):
        if self._fail("rename"):
            self._log(f"rename {old} -> {new} EIO")
            raise fuse.FuseOSError(errno.EIO)
        os.rename(self._path(old), self._path(new))
        self._log(f"rename {old} -> {new} ok")

    # ---- files

    def open(self, path, flags):
        return os.open(self._path(path), flags)

    def create(self, path, mode, fi=None):
        if self._fail("create"):
            self._log(f"create {path} EIO")
            raise fuse.FuseOSError(errno.EIO)
        fh = os.open(self._path(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        self._log(f"create {path} ok")
        return fh

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        if self._fail("write"):
            raise fuse.FuseOSError(errno.EIO)
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        if fh is not None:
            return os.ftruncate(fh, length)
        with open(self._path(path), "r+b") as file:
            file.truncate(length)
        return 0

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        delay = float(self._faults().get("fsync_delay", 0) or 0)
        if delay:
            time.sleep(delay)
        if self._fail("fsync"):
            self._log(f"fsync {path} EIO")
            raise fuse.FuseOSError(errno.EIO)
        os.fsync(fh)
        self._log(f"fsync {path} ok")
        return 0

    def fsyncdir(self, path, datasync, fh):
        if self._fail("fsyncdir"):
            raise fuse.FuseOSError(errno.EIO)
        return 0

    def release(self, path, fh):
        return os.close(fh)


def main() -> None:
    backing, mountpoint, control, log = sys.argv[1:5]
    # nothreads=False: hubcap's partitions write in parallel and a slow fsync must hold up only
    # its own caller.
    fuse.FUSE(FaultFs(backing, control, log), mountpoint, foreground=True, nothreads=False)


if __name__ == "__main__":
    main()
