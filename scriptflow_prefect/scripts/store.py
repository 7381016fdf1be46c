"""The script store: script bytes, content-addressed by sha256, in a Prefect filesystem block.

A block (local folder by default) lets a worker on another machine fetch a version by hash;
power users may point the block at shared or remote storage."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from pathlib import Path

from prefect.blocks.core import Block
from prefect.filesystems import LocalFileSystem, WritableFileSystem

from scriptflow_prefect.platform.disk_space import check_room

STORE_BLOCK = "scriptflow-store"
# Any writable filesystem block type works (a power user may swap in an SMB or S3 block of
# the same name by changing this reference); the default is a local folder.
STORE_REF = f"local-file-system/{STORE_BLOCK}"


class IntegrityError(RuntimeError):
    """The stored bytes do not match their hash."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_path(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 hex digest")
    return f"{sha256[:2]}/{sha256}"


async def ensure_store_block(basepath: str) -> None:
    """Create the default local store block unless someone configured one already."""
    try:
        await LocalFileSystem.aload(STORE_BLOCK)
    except ValueError:  # no such block document yet
        await LocalFileSystem(basepath=basepath).asave(STORE_BLOCK, overwrite=True)


_cache: tuple[float, WritableFileSystem] | None = None


def _block_sync() -> WritableFileSystem:
    # Loading a block is an API call; a worker reads the store on every run.
    global _cache
    if _cache is None or time.monotonic() - _cache[0] > 60:
        _cache = (time.monotonic(), Block.load(STORE_REF, _sync=True))
    return _cache[1]


async def _block() -> WritableFileSystem:
    # The same minute's cache: a script's page reads its content, and a slow Prefect (seconds
    # a call) would otherwise hold every such page that long.
    global _cache
    if _cache is None or time.monotonic() - _cache[0] > 60:
        _cache = (time.monotonic(), await Block.aload(STORE_REF))
    return _cache[1]


async def put(data: bytes) -> str:
    """Store `data` under its hash. In a local folder the object appears whole or not at all,
    and one already there is left alone: a full disk cannot spoil a version that uses it.
    OSError (DiskFull) when the folder's disk has no room left beyond its reserve."""
    digest = sha256_of(data)
    block = await _block()
    if isinstance(block, LocalFileSystem) and block.basepath:
        await asyncio.to_thread(_put_local, Path(block.basepath) / object_path(digest), data)
    else:
        await block.awrite_path(object_path(digest), data)
    return digest


def _put_local(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data):
        return  # content-addressed: the same name holds the same bytes (get() verifies)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_room(path.parent, len(data))
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temp, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _verified(data: bytes, sha256: str) -> bytes:
    if sha256_of(data) != sha256:
        raise IntegrityError(f"script bytes for {sha256[:12]}… do not match their hash")
    return data


async def get(sha256: str) -> bytes:
    return _verified(await (await _block()).aread_path(object_path(sha256)), sha256)


def get_sync(sha256: str) -> bytes:
    return _verified(_block_sync().read_path(object_path(sha256), _sync=True), sha256)
