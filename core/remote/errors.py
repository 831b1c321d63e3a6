"""The faults of a remote (NDIF) run, each a `RemoteError` with a message written for the user.

Why a module of its own: nnsight 0.8.1's client reports faults in four different shapes (a raw
socket error from the websocket, `RemoteError("Failed to send request: …")` wrapping an httpx
error, `RemoteError(description)` for a job the server failed, websocket handshake statuses), and
the pages must show one plain sentence per fault. `translate` maps every shape to one class here.

Every message passes through `redact`, so the NDIF key never reaches a message, a repr or a log.
`RemoteError` is a `ModelLoadError`: pages already show those in the model's own column.
"""

from __future__ import annotations

import re

from core.model.errors import ModelLoadError

NDIF_KEYS_PAGE = "https://login.ndif.us"
NDIF_STATUS_PAGE = "https://nnsight.net/status/"


class RemoteError(ModelLoadError):
    """A remote run failed. `details` holds the server's own text (redacted), e.g. its traceback."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class RemoteOffline(RemoteError):
    """NDIF could not be reached (no network, wrong host, server down)."""


class RemoteKeyError(RemoteError):
    """No NDIF key, or the server rejected it."""


class RemoteModelNotHosted(RemoteError):
    """The NDIF server does not run this model."""


class RemoteJobFailed(RemoteError):
    """The job ran on the server and failed there."""


class RemoteTimeout(RemoteError):
    """The job went past its time limit (the server's, or the one given to the client)."""


class RemoteResultTooLarge(RemoteError):
    """What the job sends back is over the page's byte budget; nothing is kept."""


class RemoteCancelled(RemoteError):
    """The page stopped waiting (the user moved on); nothing is kept, the next run starts afresh."""


# ---------------------------------------------------------------- redaction

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
MIN_SECRET_CHARS = 4  # shorter "secrets" would blank out ordinary words


def redact(text: object, *secrets: str | None) -> str:
    """`text` as a string with each secret replaced by "***" and any user:password@ in URLs removed."""
    out = str(text)
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        out = out.replace(secret, "***")
    return _URL_CREDENTIALS.sub(lambda m: m.group("scheme") + "***@", out)


# ---------------------------------------------------------------- translating nnsight's faults

_NOT_HOSTED = ("not dedicated", "hotswapping", "not deployed", "not hosted", "is not available on", "no deployment")
_TIME_LIMIT = ("time limit", "timed out", "timeout", "took too long")


def _status_of(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    code = getattr(response, "status_code", None) or getattr(error, "status_code", None)
    return int(code) if isinstance(code, int) else None


def _is_transport(error: BaseException) -> bool:
    """A fault of reaching the server at all (DNS, refused, reset, TLS, connect timeout)."""
    import httpx
    import websocket

    if isinstance(error, websocket.WebSocketBadStatusException):
        return False
    return isinstance(error, (OSError, httpx.TransportError, websocket.WebSocketException))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"


def translate(error: BaseException, *, host: str, model: str, key: str | None = None) -> RemoteError:
    """The `RemoteError` for an exception raised by nnsight's client (or already ours), redacted."""
    import websocket
    from nnsight.intervention.backends.remote import RemoteError as NnsightRemoteError

    if isinstance(error, RemoteError):
        return type(error)(redact(error, key, host_secret(host)), redact(error.details, key))
    shown = redact(host, key)
    cause = error.__cause__
    if isinstance(error, websocket.WebSocketBadStatusException):
        return _http_status(_status_of(error), "", shown, key)
    if _is_transport(error):
        return RemoteOffline(f"Offline: could not reach NDIF at {shown} ({type(error).__name__}). "
                             "Check the network and the host, or run the model locally.")
    if isinstance(error, NnsightRemoteError):
        text = redact(error, key)
        if cause is not None and _is_transport(cause):
            return RemoteOffline(f"Offline: could not reach NDIF at {shown} ({type(cause).__name__}). "
                                 "Check the network and the host, or run the model locally.")
        if cause is not None and _status_of(cause):
            detail = text.removeprefix("Failed to send request: ")
            return _http_status(_status_of(cause), detail, shown, key)
        return _server_description(text, model, shown)
    return RemoteError(f"The NDIF request for {model} failed: {redact(error, key)} ({type(error).__name__}).")


def host_secret(host: str) -> str | None:
    """The user:password part of a host URL, if any (redacted like a key)."""
    match = _URL_CREDENTIALS.match(host or "")
    return match.group("userinfo") if match else None


def _http_status(status: int | None, detail: str, host: str, key: str | None) -> RemoteError:
    said = f" The server said: {redact(detail, key)}" if detail else ""
    if status in (401, 403):
        return RemoteKeyError(f"NDIF at {host} rejected the API key (HTTP {status}). Check NDIF_API_KEY, "
                              f".streamlit/secrets.toml or the key in the sidebar; keys come from "
                              f"{NDIF_KEYS_PAGE}.{said}", redact(detail, key))
    if status == 404:
        return RemoteOffline(f"Offline: {host} answered, but it is not an NDIF server (HTTP 404).{said}",
                             redact(detail, key))
    if status is not None and status >= 500:
        return RemoteOffline(f"NDIF at {host} is not available right now (HTTP {status}); try again later.{said}",
                             redact(detail, key))
    return RemoteError(f"NDIF at {host} refused the request (HTTP {status}).{said}", redact(detail, key))


def _server_description(text: str, model: str, host: str) -> RemoteError:
    low = text.lower()
    if any(marker in low for marker in _NOT_HOSTED):
        return RemoteModelNotHosted(f"NDIF at {host} does not run {model} for this key. The models it hosts are "
                                    f"listed at {NDIF_STATUS_PAGE}; pick one of them or run the model locally.",
                                    text)
    if any(marker in low for marker in _TIME_LIMIT):
        return RemoteTimeout(f"The NDIF job for {model} went past its time limit: {_last_line(text)} "
                             "Ask for less (fewer layers, a shorter prompt) or try again later.", text)
    return RemoteJobFailed(f"The NDIF job for {model} failed on the server: {_last_line(text)}", text)
