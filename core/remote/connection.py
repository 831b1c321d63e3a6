"""Where a remote request goes and with which key: `remote=` values, the NDIF host, the NDIF key.

`remote` follows nnsight's own convention, so a notebook user reads it the same way:
False (run here, no nnsight), True (NDIF; host from NDIF_HOST, default NDIF's own), an
http(s) URL (a self-hosted NDIF at that address), "local" (nnsight's local simulation of an NDIF
request: serialized exactly as for NDIF, run on a local copy). Anything else is refused here, with
a message, before a model is built.

The key comes from an explicit argument, else NDIF_API_KEY, else `.streamlit/secrets.toml`
(`NDIF_API_KEY = "..."`); a self-hosted URL gets only an explicit one (resolve_target says why). `Target` keeps it out of its repr; every message goes through `redact`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from core.remote.errors import NDIF_KEYS_PAGE, RemoteError, RemoteKeyError, redact

DEFAULT_HOST = "https://api.ndif.us"  # nnsight 0.8.1's CONFIG.API.HOST default
SECRETS_FILE = Path(__file__).resolve().parents[2] / ".streamlit" / "secrets.toml"
KEY_NAME = "NDIF_API_KEY"


@dataclass(frozen=True)
class Target:
    """Where the requests of one remote model go.

    mode: "ndif" (NDIF's own service), "self-hosted" (a URL), "local" (nnsight's simulation).
    """

    mode: str
    host: str | None  # None for "local"
    key: str | None = field(default=None, repr=False, compare=False)

    @property
    def remote_value(self) -> bool | str:
        """The value nnsight's `remote=` takes for this target."""
        return {"ndif": True, "local": "local"}.get(self.mode, self.host)

    @property
    def is_simulation(self) -> bool:
        return self.mode == "local"

    def describe(self) -> str:
        """Where it runs, in words (for Home and provenance; never holds the key)."""
        if self.mode == "local":
            return "nnsight's local simulation of NDIF (on this machine)"
        where = "NDIF" if self.mode == "ndif" else "self-hosted NDIF"
        return f"{where} at {redact(self.host)}"

    def __repr__(self) -> str:
        return f"Target(mode={self.mode!r}, host={redact(self.host)!r}, key={'set' if self.key else 'none'})"


def check_host(url: str) -> str:
    """`url` without a trailing slash, or RemoteError when it is not an http(s) address with a host."""
    text = (url or "").strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(f"{redact(text)!r} is not an NDIF address: give a URL such as https://ndif.example.org "
                          "(http:// or https:// and a host name).")
    if parts.query or parts.fragment:
        raise RemoteError(f"The NDIF address {redact(text)!r} must not carry a query or a fragment.")
    return text.rstrip("/")


def target_mode(remote) -> str | None:
    """"ndif", "self-hosted", "local", or None for False; RemoteError for any other value."""
    if remote is False or remote is None:
        return None
    if remote is True:
        return "ndif"
    if isinstance(remote, str):
        if remote == "local":
            return "local"
        if remote.strip().lower().startswith(("http://", "https://")):
            return "self-hosted"
    raise RemoteError(f"remote={redact(remote)!r} is not understood: use False (run here), True (NDIF), "
                      "'local' (nnsight's simulation of NDIF) or the http(s) URL of a self-hosted NDIF.")


def secrets_key(path: Path | None = None) -> str | None:
    """NDIF_API_KEY from `.streamlit/secrets.toml` (None when the file or the entry is missing)."""
    path = Path(path) if path is not None else SECRETS_FILE
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None  # no file, or one we cannot read: the key may come from elsewhere (never echo the file)
    value = data.get(KEY_NAME)
    return value.strip() if isinstance(value, str) and value.strip() else None


def resolve_key(key: str | None = None, *, secrets_path: Path | None = None) -> str | None:
    """The NDIF key: `key`, else the NDIF_API_KEY variable, else `.streamlit/secrets.toml`. Never logged."""
    for candidate in (key, os.environ.get(KEY_NAME), secrets_key(secrets_path)):
        if candidate and candidate.strip():
            return candidate.strip()
    return None


def resolve_target(remote, key: str | None = None, *, secrets_path: Path | None = None) -> Target | None:
    """The Target for a `remote=` value (None for False). NDIF's own service needs a key.

    A self-hosted NDIF (a URL) gets only a key given here explicitly (the sidebar's field), never
    the ambient one (NDIF_API_KEY, secrets.toml): a URL can be typed by any visitor of a shared
    dashboard, and the server's own key must not go to whatever host they name. NDIF_HOST is set
    by whoever runs the server, so remote=True sends the ambient key there. A self-hosted NDIF may
    run without keys (its dev mode), so none is required.
    """
    mode = target_mode(remote)
    if mode is None:
        return None
    if mode == "local":
        return Target("local", None, None)
    if mode == "self-hosted":
        return Target("self-hosted", check_host(remote), key.strip() if key and key.strip() else None)
    host = check_host(os.environ.get("NDIF_HOST") or DEFAULT_HOST)  # mode "ndif"
    found = resolve_key(key, secrets_path=secrets_path)
    if not found:
        raise RemoteKeyError(
            f"No NDIF API key: set {KEY_NAME}, add {KEY_NAME} = \"…\" to .streamlit/secrets.toml, or type it "
            f"in the sidebar. Keys come from {NDIF_KEYS_PAGE}.")
    return Target("ndif", host, found)


def ndif_status(target: Target, timeout: float = 5.0) -> tuple[dict[str, str] | None, str | None]:
    """(states, None), states = {repo id: state ("RUNNING", "DEPLOYING", …)} of the models a server reports,
    or (None, why not) in plain words: the local simulation, a host that cannot be reached or timed out,
    an HTTP error, an answer that is not NDIF's.

    NDIF's GET /status lists one entry per replica; the best state of a repo's replicas is kept (as
    nnsight.ndif.status folds them). Asked of `target.host` directly, so two models on two servers
    each get their own answer. The reason holds no exception text (a server may echo anything).
    """
    if target.is_simulation:
        return None, "nnsight's local simulation runs on this machine: there is no NDIF server to ask"
    import httpx

    where = f"{redact(target.host)}/status"
    try:
        response = httpx.get(f"{target.host}/status", timeout=httpx.Timeout(timeout))
    except httpx.TimeoutException:
        return None, f"{where} did not answer within {timeout:g} s"
    except httpx.HTTPError as error:
        return None, f"{where} could not be reached from here ({type(error).__name__})"
    if response.status_code != 200:
        return None, f"{where} answered HTTP {response.status_code}"
    try:
        deployments = response.json().get("deployments")
    except (ValueError, AttributeError):
        deployments = None
    if not isinstance(deployments, dict):
        return None, f"{where} answered, but not with NDIF's list of deployments: is it an NDIF server?"
    rank = {"RUNNING": 0, "DEPLOYING": 1, "NOT_STARTED": 2, "UNHEALTHY": 3}
    states: dict[str, str] = {}
    for entry_name, entry in deployments.items():
        if not isinstance(entry, dict):
            continue
        repo = entry.get("repo_id", entry_name)
        state = entry.get("application_state", "UNHEALTHY")
        if repo not in states or rank.get(state, 9) < rank.get(states[repo], 9):
            states[repo] = state
    return states, None
