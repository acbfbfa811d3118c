"""Count the files written into a directory, by whichever process and node writes them (inotify).

A test that asks "was the checkpoint written once?" cannot tell from the file: a second writer
that renames the same content over it leaves no trace. The kernel sees every write, though, and
on the Slurm test cluster every node shares this machine's kernel and file system, so one watch
in the test process counts the writes of every rank on every node.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections import Counter
from pathlib import Path
from types import TracebackType

_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)

_libc = ctypes.CDLL(None, use_errno=True)


class FileArrivals:
    """Watch ``directory`` (not its subdirectories) for files that arrive complete: closed after
    writing, or renamed into it (how ``idhhpc.atomic.atomic_path`` publishes a file).

    Use as a context manager; :meth:`counts` reads what arrived so far, per file name.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._fd = -1
        self._counts: Counter[str] = Counter()

    def __enter__(self) -> "FileArrivals":
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if _libc.inotify_add_watch(fd, os.fsencode(self.directory), _IN_CLOSE_WRITE | _IN_MOVED_TO) < 0:
            error = ctypes.get_errno()
            os.close(fd)
            raise OSError(error, f"inotify_add_watch {self.directory} failed")
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._drain()
        os.close(self._fd)
        self._fd = -1

    def counts(self, *, final_only: bool = True) -> Counter[str]:
        """Arrivals per name; ``final_only`` keeps the names that exist now (drops temporary files)."""
        if self._fd >= 0:
            self._drain()
        if not final_only:
            return Counter(self._counts)
        return Counter({name: n for name, n in self._counts.items() if (self.directory / name).exists()})

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except OSError as error:
                if error.errno == errno.EAGAIN:
                    return
                raise
            offset = 0
            while offset < len(data):
                _, _, _, length = _EVENT_HEADER.unpack_from(data, offset)
                offset += _EVENT_HEADER.size
                name = data[offset:offset + length].rstrip(b"\0").decode()
                offset += length
                if name:
                    self._counts[name] += 1
