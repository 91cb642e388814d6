"""Key material loaded again without a restart: on SIGHUP, or when its files change.

API keys, JWT keys and TLS certificates rotate: a new file is mounted (a Kubernetes
secret is swapped by a symlink), then SIGHUP, or the next look at the files, loads
it. A file that does not load (half written, the wrong key) keeps what was loaded
before and logs an error: the server never goes on without keys. Calls in flight
are not disturbed: each item swaps its material in one assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

log = logging.getLogger("repogate")


class Reloadable(Protocol):
    @property
    def files(self) -> tuple[Path, ...]:
        """The files it reads (watched for changes); empty: reloaded on SIGHUP only."""
        ...

    def reload(self) -> None:
        """Loads its material again; raises, keeping what it had, when that fails."""
        ...


class Reloader:
    def __init__(self, items: Sequence[Reloadable], interval: float) -> None:
        self._items = list(items)
        self._interval = interval
        self._seen = [_signature(item.files) for item in self._items]
        self._watching: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts watching the files (see watch)."""
        self._watching = asyncio.create_task(self.watch())

    async def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
            self._watching = None

    def reload(self) -> bool:
        """Reloads every item (SIGHUP); False if one failed (and kept its old material)."""
        done = [self._reload(i) for i in range(len(self._items))]  # each, even after a failure
        return all(done)

    async def watch(self) -> None:
        """Reloads an item whenever one of its files changes, looking every `interval`."""
        if not self._interval or not any(item.files for item in self._items):
            return
        while True:
            await asyncio.sleep(self._interval)
            for i, item in enumerate(self._items):
                if item.files and _signature(item.files) != self._seen[i]:
                    self._reload(i)

    def _reload(self, i: int) -> bool:
        item = self._items[i]
        # Taken first: a file changed while it is read is read again next time.
        self._seen[i] = _signature(item.files)
        what = ", ".join(map(str, item.files)) or type(item).__name__
        try:
            item.reload()
        except Exception as exc:  # whatever it is, the old material stays
            log.error("reloading %s failed, keeping what was loaded before: %s", what, exc)
            return False
        log.info("reloaded %s", what)
        return True


def _signature(files: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file is rewritten or replaced (stat follows symlinks)."""
    found = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            found.append((0, 0, 0))
        else:
            found.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(found)
