"""Resumable run directories: long calibration jobs record each finished item once and skip it on a re-run.

A `RunDir` is a directory with a `config.json` (the options that determine the results; a re-run with different
options is refused with a message naming the field, so stale results are never mixed with new ones) and any number
of `DoneLog`s: append-only JSONL files with one row per finished item, keyed by a field (default "id").

Crash safety: every row is appended as one line and fsynced; a line cut short by a kill is ignored on reading and
cut off before the next append. Files an item produces (images, arrays) should be written with
`vseam.core.files.atomic_write*` (tmp file + rename) *before* its row is appended, so a row always points at
complete files.

A calibration run also records its creation time (`run.json`): the profiles it writes carry it, so a resumed run
writes byte-identical profiles.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import pathlib
from typing import Iterator

from vseam.core.errors import UserError
from vseam.core.files import atomic_write_json


def _key_of(row: dict, key: str):
    """row[key], where a dotted key ("record.qid") looks into nested objects; KeyError when absent."""
    value = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(key)
        value = value[part]
    return value


class DoneLog:
    """Append-only JSONL of finished items, one JSON object per line, keyed by `row[key]`.

    `key` may be dotted ("record.qid") so that rows can be plain serialised records (e.g. `EditedPair.to_json()`).
    The first row for a key wins (a key is never re-done once logged). Rows keep their append order.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id"):
        self.path = pathlib.Path(path)
        self.key = key
        self._rows: dict[str, dict] = {}
        self._valid_bytes = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        pos = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # cut short by a kill: ignored, and cut off before the next append
            pos += len(line)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{self.path}: line is not JSON ({e.msg}); remove or fix it to resume") from None
            try:
                k = _key_of(row, self.key)
            except KeyError:
                raise UserError(f"{self.path}: a row has no {self.key!r} field; remove or fix it to resume") from None
            self._rows.setdefault(str(k), row)
        self._valid_bytes = pos

    def __contains__(self, key: object) -> bool:
        return str(key) in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self._rows.values())

    def get(self, key: object) -> dict | None:
        return self._rows.get(str(key))

    def keys(self) -> list[str]:
        return list(self._rows)

    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def append(self, row: dict) -> None:
        """Record one finished item (durably). Appending a key that is already logged is an error."""
        try:
            k = str(_key_of(row, self.key))
        except KeyError:
            raise ValueError(f"row has no {self.key!r} field: {row}") from None
        if k in self._rows:
            raise ValueError(f"{self.path}: {self.key}={k!r} is already logged")
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "r+b" if self.path.exists() else "wb") as fh:
            fh.truncate(self._valid_bytes)
            fh.seek(self._valid_bytes)
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._valid_bytes += len(line)
        self._rows[k] = row


class RunDir:
    """A run directory with a fixed configuration and resumable logs.

    config: the options that determine the results (JSON-serialisable). On a fresh directory it is written to
            config.json; on an existing one it must match what is there (extra/missing keys count as different),
            unless `restart=True`, which deletes the old logs and starts over.
    """

    CONFIG = "config.json"

    def __init__(self, path: str | os.PathLike, config: dict | None = None, *, restart: bool = False):
        self.restarted = restart
        self.root = pathlib.Path(path)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = dict(config or {})
        cfg_path = self.root / self.CONFIG
        if restart:
            for p in self.root.glob("*.jsonl"):
                p.unlink()
        if cfg_path.exists() and not restart:
            try:
                old = json.loads(cfg_path.read_text())
            except json.JSONDecodeError as e:
                raise UserError(f"{cfg_path}: not valid JSON ({e.msg})") from None
            new = json.loads(json.dumps(self.config, sort_keys=True))  # same normalisation as on disk
            for field in sorted(set(old) | set(new)):
                if old.get(field) != new.get(field):
                    raise UserError(
                        f"{self.root}: existing run was made with {field}={old.get(field)!r}, this one has "
                        f"{field}={new.get(field)!r}; use another output directory or --restart"
                    )
        else:
            atomic_write_json(cfg_path, self.config)
        self._logs: dict[str, DoneLog] = {}

    def path(self, *parts: str) -> pathlib.Path:
        return self.root.joinpath(*parts)

    def sub(self, *parts: str) -> pathlib.Path:
        """`path(*parts)` with its parent folder created."""
        p = self.path(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @functools.cached_property
    def created(self) -> str:
        """When the run was first created (ISO-8601 UTC, kept in run.json; a `restart` makes a new one)."""
        meta_path = self.path("run.json")
        meta = None
        if meta_path.exists() and not self.restarted:
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError as e:
                raise UserError(f"{meta_path}: not valid JSON ({e.msg}); remove it or use --restart") from None
        if not meta or "created" not in meta:
            meta = {"created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
            atomic_write_json(meta_path, meta)
        return meta["created"]

    def log(self, name: str, key: str = "id") -> DoneLog:
        """The done-log `<name>.jsonl` (one object per name, shared by callers)."""
        if name not in self._logs:
            self._logs[name] = DoneLog(self.root / f"{name}.jsonl", key=key)
        return self._logs[name]


__all__ = ["DoneLog", "RunDir"]
