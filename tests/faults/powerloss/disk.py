"""A store directory whose writers run under the power-loss shim, and the power loss itself."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SHIM_SOURCE", "SimulatedDisk", "build_shim"]

SHIM_SOURCE = Path(__file__).with_name("shim.c")


def build_shim() -> Path:
    """Compile shim.c once per source version into the temp directory; returns the library's path."""
    source = SHIM_SOURCE.read_bytes()
    library = Path(tempfile.gettempdir()) / f"edbus-powerloss-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if library.exists():
        return library
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    result = subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Wno-format-truncation",
                             "-o", str(partial), str(SHIM_SOURCE), "-ldl"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"cannot compile {SHIM_SOURCE}:\n{result.stderr}")
    os.replace(partial, library)  # concurrent builds of the same source: the last one wins, same bytes
    return library


@dataclass(frozen=True, slots=True)
class SimulatedDisk:
    """``store`` holds the store's files; ``images`` what of them an fsync made durable (see README.md).

    Every process that writes the store must run with ``env()``; ``power_loss()`` must only be called
    once they are all dead.
    """

    store: Path
    images: Path
    library: Path

    @classmethod
    def create(cls, root: Path) -> SimulatedDisk:
        store, images = root / "store", root / "images"
        store.mkdir(parents=True)
        images.mkdir(parents=True)
        return cls(store, images, build_shim())

    @property
    def db(self) -> Path:
        return self.store / "edbus.db"

    def url(self, synchronous: str = "full") -> str:
        return f"sqlite:///{self.db}?synchronous={synchronous}"

    def env(self, *, durability: bool = True, enospc_after: int | None = None) -> dict[str, str]:
        """The environment of a process under the shim: durability model and/or a disk-space limit."""
        env = dict(os.environ, LD_PRELOAD=str(self.library), EDBUS_POWERLOSS_DIR=str(self.store))
        if durability:
            env["EDBUS_POWERLOSS_IMAGES"] = str(self.images)
        if enospc_after is not None:
            env["EDBUS_POWERLOSS_ENOSPC_AFTER"] = str(enospc_after)
        return env

    def durable_names(self) -> list[str]:
        names = self.images / "names"
        return names.read_text().split() if names.exists() else []

    def power_loss(self) -> dict[str, int]:
        """Replace every store file by its durable image; returns the size of each file kept."""
        for entry in self.store.iterdir():
            if entry.is_file():
                entry.unlink()  # the page cache is gone: -shm too (SQLite rebuilds it)
        kept = {}
        for name in self.durable_names():
            image = self.images / f"{name}.data"
            target = self.store / name
            if image.exists():
                shutil.copyfile(image, target)
            else:
                target.touch()  # the name was synced, none of its content was
            kept[name] = target.stat().st_size
        return kept
