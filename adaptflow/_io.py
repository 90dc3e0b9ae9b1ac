"""Atomic file writes and provenance, shared by every room that writes results (experiments) or
artifacts (the runtime's export); it depends on nothing of theirs."""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where the kernel says it (Linux's
    ``/proc/self/status``). Elsewhere ``os.umask`` is the only way to read it, and it sets one
    while it reads: we set the strictest (077) for that instant, so a file another thread creates
    then is at worst too private, never too open. Read at every write, not cached: a program may
    change its umask while it runs."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The rename is atomic on POSIX, so readers see the old file or the new one, never a part: a
    crash or Ctrl-C never leaves a half-written result behind. The file gets the mode any new
    file gets (``0o666`` less the umask): ``mkstemp`` makes its temporary ``0o600`` (private while
    it is hidden and partial), which the rename would otherwise carry into every result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # after write(): a writer that replaces the temporary (save_model does) brings its own mode
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def package_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """Python's and each package's version (None if not installed): the provenance of a run or export."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
