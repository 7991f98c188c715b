"""Image ids from list files: every id is checked so that none can escape the dataset root."""
from __future__ import annotations

import re
from pathlib import Path

from salmask.errors import InputError
from salmask.io import read_text

_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def check_id(image_id: str, source: Path) -> str:
    """Ids come from list files; one that could escape the dataset root (``../x``, ``/x``) is refused."""
    if not _SAFE_ID.match(image_id) or ".." in image_id:
        raise InputError(source, f"unsafe image id {image_id!r} (ids may hold letters, digits, _ . -)")
    return image_id


def read_id_list(path: Path) -> list[str]:
    """The first word of each non-empty line of the split list ``path``, checked."""
    ids = [line.split()[0] for line in read_text(path, "split list").splitlines() if line.strip()]
    return [check_id(i, path) for i in ids]
