"""Writing output files so that a reader never sees half a file and a clerk's account can read them.

Each file is written to a hidden temporary name beside its target (`.<name>.<random>.tmp`) and renamed
into place; a run killed in between leaves only such temporaries, which `clean_temporaries` removes at
the start of the next run. Files get the permissions the process's umask gives a new file (0644 under
the usual 022), not the 0600 of `mkstemp`: the account that serves the department files must read them.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def temporary_for(target: Path) -> Path:
    """A new, empty temporary file beside `target` (its folder is created)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    return Path(tmp)


def publish(tmp: Path, target: Path) -> Path:
    """Give the finished temporary file normal permissions and rename it to `target` (atomic)."""
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, target)
    return Path(target)


def clean_temporaries(root: Path) -> int:
    """Remove temporaries a killed run left under `root`; returns how many."""
    n = 0
    for path in Path(root).rglob(f".*{TEMP_SUFFIX}") if Path(root).exists() else ():
        if path.is_file():
            path.unlink(missing_ok=True)
            n += 1
    for path in Path(root).rglob(".tmp-*") if Path(root).exists() else ():  # the names used before
        if path.is_file():
            path.unlink(missing_ok=True)
            n += 1
    return n
