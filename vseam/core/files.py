"""Files: atomic writes (a reader never sees half a file) and vseam's cache directory, one home each.

Crash safety: write the whole content to a temporary file in the target's folder, flush and fsync it, then rename
it over the target (`os.replace` is atomic on POSIX). A killed writer leaves the old file or none, never a torn one.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import tempfile
from typing import Any, BinaryIO, Callable

#: environment variable naming the cache root (default ~/.cache/vseam): SAM weights, rendered `shapes` images,
#: counterfactual-question replies, the organism's training pool
CACHE_ENV = "VSEAM_CACHE"


def cache_dir(*parts: str) -> pathlib.Path:
    """$VSEAM_CACHE (default ~/.cache/vseam), or a folder below it; not created."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "vseam")
    return pathlib.Path(root, *parts)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Atomically write what `write(file)` writes into a binary file object (e.g. `torch.save`, `np.savez`)."""
    buf = io.BytesIO()
    write(buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_image(path: str | os.PathLike, image) -> None:
    """Save a PIL image (format from the suffix) atomically."""
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(pathlib.Path(path).suffix.lower(), "PNG")
    atomic_write_with(path, lambda fh: image.save(fh, format=fmt))


__all__ = ["CACHE_ENV", "atomic_save_image", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "atomic_write_with", "cache_dir"]
