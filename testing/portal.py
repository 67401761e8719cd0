"""In-memory doubles of an S5 portal and of the s5.js bridge, for tests and local runs.

The portal double enforces what the Dart node enforces (S5.md): legacy CIDs on download,
signed registry entries with rising revisions and at most 48 data bytes, single-use login
challenges bound to the host, and auth on writes. ``app[FAULTS]`` injects failures.

Run one standalone: ``python -m s5vec.testing.portal --port 5050 [--bridge] [--no-auth]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Final, Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from s5vec.storage.blobid import LEGACY_PREFIX, BlobId, blake3_digest, multibase_decode
from s5vec.storage.portal import AUTH_COOKIE, REVISION_TOO_LOW, legacy_cid
from s5vec.storage.s5.registry import (
    CHALLENGE_LOGIN,
    CHALLENGE_REGISTER,
    MAX_DATA_BYTES,
    MAX_REVISION,
    RegistryEntry,
    b64url,
    b64url_decode,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES: Final = 34 * 1024 * 1024
ListShape = Literal["names", "entries"]


@dataclass
class Faults:
    """Failure knobs, each a count consumed by the requests it hits. With ``target`` set,
    only requests whose "METHOD /path" starts with it are hit. ``requests`` logs them all."""

    fail_next: int = 0  # answer fail_status without handling
    fail_status: int = 503
    latency: float = 0.0  # seconds before handling every (targeted) request
    corrupt_downloads: int = 0  # flip a byte of a 200 octet-stream GET body
    wrong_cid_uploads: int = 0  # store the upload but answer another CID
    drop_next: int = 0  # close the connection without handling
    drop_replies: int = 0  # handle, then close the connection instead of answering
    target: str = ""
    requests: list[str] = field(default_factory=list)


@dataclass
class PortalState:
    """Everything the portal double stores, open for tests to inspect or tamper with."""

    require_auth: bool = True
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    allow_delete: bool = True
    registry_error_status: int = 400
    blobs: dict[bytes, bytes] = field(default_factory=dict)  # blake3 hash -> bytes
    registry: dict[bytes, RegistryEntry] = field(default_factory=dict)  # 33-byte pk -> entry
    accounts: set[bytes] = field(default_factory=set)
    tokens: dict[str, bytes] = field(default_factory=dict)
    challenges: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)  # -> (kind, pk)


@dataclass
class BridgeState:
    """Files of the bridge double by path; ``list_shape`` picks the listing body."""

    list_shape: ListShape = "names"
    files: dict[str, bytes] = field(default_factory=dict)


FAULTS: Final = web.AppKey("faults", Faults)
PORTAL: Final = web.AppKey("portal", PortalState)
BRIDGE: Final = web.AppKey("bridge", BridgeState)


def _drop(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)  # never reaches the client


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    faults = request.app[FAULTS]
    line = f"{request.method} {request.path}"
    faults.requests.append(line)
    if not line.startswith(faults.target):
        return await handler(request)
    if faults.latency:
        await asyncio.sleep(faults.latency)
    if faults.drop_next > 0:
        faults.drop_next -= 1
        return _drop(request)
    if faults.fail_next > 0:
        faults.fail_next -= 1
        return web.Response(status=faults.fail_status, text="injected failure")
    response = await handler(request)
    if faults.drop_replies > 0:
        faults.drop_replies -= 1
        return _drop(request)
    if faults.corrupt_downloads > 0 and request.method == "GET" and isinstance(response, web.Response) \
            and response.status == 200 and response.content_type == "application/octet-stream":
        faults.corrupt_downloads -= 1
        body = bytearray(response.body or b"\x00")  # type: ignore[arg-type]
        body[len(body) // 2] ^= 0x01
        response.body = bytes(body)
    return response


def _bad(text: str, status: int = 400) -> web.Response:
    return web.Response(status=status, text=text)


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):]
    return request.cookies.get(AUTH_COOKIE) or request.query.get("auth_token")


def _authorized(request: web.Request) -> bool:
    state = request.app[PORTAL]
    return not state.require_auth or _token(request) in state.tokens


def _blob_id(text: str, *, legacy_only: bool) -> BlobId | None:
    try:
        raw = multibase_decode(text)
        if legacy_only and not raw.startswith(LEGACY_PREFIX):
            return None
        return BlobId.from_bytes(raw)
    except ValueError:
        return None


# -- portal: blobs ------------------------------------------------------------------------

async def _read_upload(request: web.Request, limit: int) -> bytes | web.Response:
    if request.content_type != "multipart/form-data":
        data = await request.read()
        return _bad("File too large", 413) if len(data) > limit else data
    reader = await request.multipart()
    async for part in reader:
        if getattr(part, "name", None) != "file":
            continue
        chunks, size = [], 0
        while chunk := await part.read_chunk():  # type: ignore[union-attr]
            size += len(chunk)
            if size > limit:
                return _bad("File too large", 413)
            chunks.append(chunk)
        return b"".join(chunks)
    return _bad("multipart body has no field 'file'")


async def upload(request: web.Request) -> web.Response:
    state, faults = request.app[PORTAL], request.app[FAULTS]
    if not _authorized(request):
        return _bad("Unauthorized", 401)
    data = await _read_upload(request, state.max_upload_bytes)
    if isinstance(data, web.Response):
        return data
    blob_id = BlobId.of(data)
    state.blobs[blob_id.hash] = data
    if faults.wrong_cid_uploads > 0:
        faults.wrong_cid_uploads -= 1
        blob_id = BlobId.of(data + b"!")
    return web.json_response({"cid": legacy_cid(blob_id)})


async def download(request: web.Request) -> web.Response:
    blob_id = _blob_id(request.match_info["cid"], legacy_only=True)
    if blob_id is None:
        return _bad("Invalid CID: /s5/download only accepts raw legacy CIDs (0x26 0x1f)")
    data = request.app[PORTAL].blobs.get(blob_id.hash)
    if data is None or len(data) != blob_id.size:
        return _bad("Not found", 404)
    return web.Response(body=data, content_type="application/octet-stream")


async def blob_redirect(request: web.Request) -> web.Response:
    blob_id = _blob_id(request.match_info["cid"], legacy_only=False)
    if blob_id is None:
        return _bad("Invalid CID")
    raise web.HTTPTemporaryRedirect(f"/s5/download/{legacy_cid(blob_id)}")


async def delete(request: web.Request) -> web.Response:
    state = request.app[PORTAL]
    if not _authorized(request):
        return _bad("Unauthorized", 401)
    if not state.allow_delete:
        return _bad("Unpinning is disabled on this portal", 405)
    blob_id = _blob_id(request.match_info["cid"], legacy_only=False)
    if blob_id is None:
        return _bad("Invalid CID")
    if state.blobs.pop(blob_id.hash, None) is None:
        return _bad("Not found", 404)
    return web.Response(status=204)


# -- portal: registry ---------------------------------------------------------------------

async def registry_get(request: web.Request) -> web.Response:
    try:
        pk = b64url_decode(request.query.get("pk", ""))
    except ValueError:
        return _bad("Invalid pk")
    entry = request.app[PORTAL].registry.get(pk)
    if entry is None:
        return _bad("Not found", 404)
    return web.json_response(entry.to_json())


async def registry_set(request: web.Request) -> web.Response:
    state = request.app[PORTAL]
    if not _authorized(request):
        return _bad("Unauthorized", 401)
    try:
        entry = RegistryEntry.from_json(await request.json())
    except ValueError as exc:
        if "data too long" in str(exc):
            return _bad("Data too long", state.registry_error_status)
        return _bad(f"Invalid registry entry: {exc}")
    if len(entry.data) > MAX_DATA_BYTES:
        return _bad("Data too long", state.registry_error_status)
    if entry.revision > MAX_REVISION:
        return _bad("Revision number too high", state.registry_error_status)
    if not entry.verify():
        return _bad("Invalid signature found", state.registry_error_status)
    stored = state.registry.get(entry.public_key)
    if stored is not None and entry.revision <= stored.revision:
        return _bad(REVISION_TOO_LOW, state.registry_error_status)
    state.registry[entry.public_key] = entry
    return web.Response(status=204)


# -- portal: accounts ---------------------------------------------------------------------

def _challenge_kind(request: web.Request) -> int:
    return CHALLENGE_REGISTER if request.path.endswith("/register") else CHALLENGE_LOGIN


async def account_challenge(request: web.Request) -> web.Response:
    try:
        pk = b64url_decode(request.query.get("pubKey", ""))
    except ValueError:
        pk = b""
    if len(pk) != 33 or pk[0] != 0xED:
        return _bad("Invalid pubKey: expected base64url of 0xed + 32-byte ed25519 key")
    challenge = secrets.token_bytes(32)
    request.app[PORTAL].challenges[challenge] = (_challenge_kind(request), pk)
    return web.json_response({"challenge": b64url(challenge)})


async def account_answer(request: web.Request) -> web.Response:
    state, kind = request.app[PORTAL], _challenge_kind(request)
    try:
        body = await request.json()
        pk, response, signature = (b64url_decode(body[k]) for k in ("pubKey", "response", "signature"))
    except (ValueError, KeyError, TypeError):
        return _bad("Invalid request: pubKey, response and signature are required base64url fields")
    if len(response) != 65 or len(pk) != 33:
        return _bad("Invalid challenge response length")
    issued = state.challenges.pop(response[1:33], None)  # single use, even when the rest is wrong
    if response[0] != kind:
        return _bad("Invalid challenge type")
    if issued != (kind, pk):
        return _bad("Invalid challenge: not issued to this key, or already used")
    if response[33:] != blake3_digest(request.host.encode()):
        return _bad("Invalid challenge: signed for another portal host")
    try:
        VerifyKey(pk[1:]).verify(response, signature)
    except (CryptoError, ValueError):
        return _bad("Invalid signature")
    if kind == CHALLENGE_REGISTER and pk in state.accounts:
        return _bad("This public key is already registered")
    if kind == CHALLENGE_LOGIN and pk not in state.accounts:
        return _bad("No account with this public key")
    state.accounts.add(pk)
    token = secrets.token_urlsafe(24)
    state.tokens[token] = pk
    reply = web.json_response({"authToken": token})
    reply.set_cookie(AUTH_COOKIE, token, httponly=True, samesite="Strict")
    return reply


def create_test_portal(*, require_auth: bool = True, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                       allow_delete: bool = True, registry_error_status: int = 400) -> web.Application:
    """The portal double; ``app[PORTAL]`` is its state and ``app[FAULTS]`` its fault knobs."""
    app = web.Application(middlewares=[fault_middleware], client_max_size=max_upload_bytes + 1024 * 1024)
    app[FAULTS] = Faults()
    app[PORTAL] = PortalState(require_auth=require_auth, max_upload_bytes=max_upload_bytes,
                              allow_delete=allow_delete, registry_error_status=registry_error_status)
    app.router.add_post("/s5/upload", upload)
    app.router.add_get("/s5/download/{cid}", download)
    app.router.add_get("/s5/blob/{cid}", blob_redirect)
    app.router.add_delete("/s5/delete/{cid}", delete)
    app.router.add_get("/s5/registry", registry_get)
    app.router.add_post("/s5/registry", registry_set)
    for name in ("register", "login"):
        app.router.add_get(f"/s5/account/{name}", account_challenge)
        app.router.add_post(f"/s5/account/{name}", account_answer)
    return app


# -- bridge -------------------------------------------------------------------------------

def _listing(state: BridgeState, prefix: str) -> web.Response:
    children: dict[str, tuple[str, int]] = {}
    for path, data in state.files.items():
        if path.startswith(prefix):
            head, sep, _ = path[len(prefix):].partition("/")
            children[head] = ("directory", 0) if sep else ("file", len(data))
    if not children and prefix:
        return _bad("Not found", 404)
    if state.list_shape == "names":
        return web.json_response(sorted(children))
    return web.json_response({"entries": [{"name": n, "type": t, "size": s}
                                          for n, (t, s) in sorted(children.items())]})


async def bridge_fs(request: web.Request) -> web.Response:
    state, path = request.app[BRIDGE], request.match_info["path"]
    if request.method == "GET" and (path == "" or path.endswith("/")):
        return _listing(state, path)
    if request.method == "PUT":
        state.files[path] = await request.read()
        return web.json_response({"ok": True}, status=201)
    if request.method == "DELETE":
        return web.Response(status=204 if state.files.pop(path, None) is not None else 404)
    if request.method in ("GET", "HEAD"):
        data = state.files.get(path)
        if data is None:
            return _bad("Not found", 404)
        return web.Response(body=data, content_type="application/octet-stream")
    return _bad("Method not allowed", 405)


async def bridge_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "files": len(request.app[BRIDGE].files)})


def create_test_bridge(*, list_shape: ListShape = "names",
                       max_body_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> web.Application:
    """The bridge double; ``app[BRIDGE]`` is its state and ``app[FAULTS]`` its fault knobs."""
    app = web.Application(middlewares=[fault_middleware], client_max_size=max_body_bytes)
    app[FAULTS] = Faults()
    app[BRIDGE] = BridgeState(list_shape=list_shape)
    app.router.add_route("*", "/s5/fs/{path:.*}", bridge_fs)
    app.router.add_get("/health", bridge_health)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve a portal (or bridge) double until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m s5vec.testing.portal", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5050)
    parser.add_argument("--bridge", action="store_true", help="serve the bridge double instead")
    parser.add_argument("--list-shape", choices=("names", "entries"), default="names")
    parser.add_argument("--no-auth", action="store_true", help="accept writes without a token")
    parser.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before handling every request")
    args = parser.parse_args(argv)
    if args.latency_ms < 0:
        parser.error("--latency-ms must not be negative")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.bridge:
        app = create_test_bridge(list_shape=args.list_shape, max_body_bytes=args.max_upload_bytes)
    else:
        app = create_test_portal(require_auth=not args.no_auth, max_upload_bytes=args.max_upload_bytes)
    app[FAULTS].latency = args.latency_ms / 1000.0
    logger.info("test %s listening on http://%s:%d", "bridge" if args.bridge else "portal", args.host, args.port)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
