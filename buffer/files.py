"""Owner-only buffer files, whatever the umask the daemon was started with.

The buffer holds every quality record and its context (operators, parts, lots) until it is
delivered, so only the service account may read it: directories the daemon creates for it
are 0700, the database 0600. SQLite creates the ``-wal`` and ``-shm`` files with the mode
of the database file (and sets it exactly, ignoring the umask), so making the database
0600 right after SQLite created it, before WAL mode is switched on, covers all three. Files
that an older version left wider are narrowed at open.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(directory: Path) -> None:
    """Create ``directory`` and its missing parents 0700 (mkdir's mode is masked by the
    umask, and ``parents=True`` ignores it for the parents); existing ones stay as they are
    (e.g. systemd's StateDirectory=, whose mode the unit sets)."""
    missing: list[Path] = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by someone else: leave its mode alone
        os.chmod(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Narrow the database file and its SQLite side files to 0600 (those that exist)."""
    for suffix in ("", *SIDE_FILES):
        target = path.with_name(path.name + suffix)
        try:
            if target.stat().st_mode & 0o777 != FILE_MODE:
                os.chmod(target, FILE_MODE)
        except FileNotFoundError:
            continue
        except PermissionError:
            continue  # another owner's file (opened through group rights): theirs to set
