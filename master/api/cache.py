"""/api/v1/node/cache/*: the binary cache of built software releases.

A node the admin trusts as a builder uploads the archive of a release it
built; any node downloads it by key (release URL, expanded profile,
platform, software root) and checks it against the digest recorded here.
An untrusted node (a volunteer machine) can never upload.
"""

import hashlib
import os
import re

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import select

from ..errors import BadRequest, Forbidden, NotFound
from ..models import CacheEntry, Computer
from .deps import master_of, node_of, StrictRoute

router = APIRouter(prefix="/node/cache", tags=["binary cache"], route_class=StrictRoute)
KEY_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_ARCHIVE = 8 << 30


def _key(key):
    if not KEY_RE.match(key):
        raise BadRequest("a cache key is 64 lowercase hex digits")
    return key


def _entry(master, key):
    with master.read() as session:
        entry = session.scalars(select(CacheEntry).where(CacheEntry.key == key)).first()
    if entry is None:
        raise NotFound(f"no cached build for key {key[:12]}…")
    return entry


@router.get("/{key}")
def lookup(key: str, request: Request):
    node_of(request)
    entry = _entry(master_of(request), _key(key))
    return {"key": entry.key, "url": entry.url, "platform": entry.platform,
            "digest": entry.digest, "size": entry.size}


@router.get("/{key}/archive")
def download(key: str, request: Request):
    node_of(request)
    master = master_of(request)
    entry = _entry(master, _key(key))
    path = master.cache_dir / f"{entry.key}.tar.gz"
    if not path.exists():
        raise NotFound("the cached archive is missing on the master; build instead")
    return FileResponse(path, media_type="application/gzip")


@router.put("/{key}", status_code=201)
async def upload(key: str, request: Request, digest: str = Query(pattern="^[0-9a-f]{64}$"),
                 url: str = Query(min_length=1, max_length=1024),
                 platform: str = Query(min_length=1, max_length=128)):
    from fastapi.concurrency import run_in_threadpool

    node = node_of(request)
    master = master_of(request)
    key = _key(key)

    def trusted():
        with master.read() as session:
            return session.get(Computer, node.computer_id).trusted_builder

    if not await run_in_threadpool(trusted):
        raise Forbidden("this node is not a trusted builder; only nodes the admin trusts "
                        "(`slapnode node trust NAME`) may fill the binary cache")
    master.cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = master.cache_dir / f".{key}.{os.getpid()}.upload"
    hasher, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_ARCHIVE:
                    raise BadRequest("archive too large")
                hasher.update(chunk)
                out.write(chunk)
        if hasher.hexdigest() != digest:
            raise BadRequest("the archive does not match its digest; upload again")
        os.replace(tmp, master.cache_dir / f"{key}.tar.gz")
    finally:
        if tmp.exists():
            tmp.unlink()

    def record(session):
        entry = session.scalars(select(CacheEntry).where(CacheEntry.key == key)).first()
        if entry is None:
            entry = CacheEntry(key=key)
            session.add(entry)
        entry.url, entry.platform, entry.digest, entry.size = url, platform, digest, size
        entry.computer_id = node.computer_id
        return {"key": key, "digest": digest, "size": size}
    return await run_in_threadpool(master.write, record)
