"""Uploaded files waiting between the dry run and the confirmed import.

The confirm step must import exactly the file that was checked, without asking for it again. The file is
kept under the data directory in `import-staging/`, named by a random token (never by anything the user
sent), next to a small JSON note of who uploaded it, for which import and when. Only that user may use the
token, for that kind of import, within an hour; the files are deleted once used and swept when stale.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path

from flask import current_app

TTL_S = 3600
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


def staging_dir() -> Path:
    path = Path(current_app.config["LABSHARE_SETTINGS"].data_dir).resolve() / "import-staging"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def sweep(now: float | None = None) -> None:
    now = now or time.time()
    for path in staging_dir().iterdir():
        try:
            if now - path.stat().st_mtime > TTL_S:
                path.unlink(missing_ok=True)
        except OSError:
            continue


def stage(user_id: int, kind: str, filename: str, data: bytes) -> str:
    sweep()
    token = secrets.token_urlsafe(24)
    directory = staging_dir()
    _write(directory / f"{token}.data", data)
    note = {"user_id": user_id, "kind": kind, "filename": filename[:200], "at": time.time()}
    _write(directory / f"{token}.json", json.dumps(note).encode())
    return token


def load(token: str, user_id: int, kind: str) -> tuple[str, bytes] | None:
    """The staged file's name and bytes, if the token is this user's for this kind and not expired."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        return None
    directory = staging_dir()
    try:
        note = json.loads((directory / f"{token}.json").read_text())
        data = (directory / f"{token}.data").read_bytes()
    except (OSError, ValueError):
        return None
    if note.get("user_id") != user_id or note.get("kind") != kind or time.time() - note.get("at", 0) > TTL_S:
        return None
    return note.get("filename", ""), data


def discard(token: str) -> None:
    if isinstance(token, str) and _TOKEN.fullmatch(token):
        for suffix in (".data", ".json"):
            (staging_dir() / f"{token}{suffix}").unlink(missing_ok=True)
