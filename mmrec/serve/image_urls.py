"""Item images from http(s) URLs while onboarding: off unless enabled, size- and time-capped, SSRF-safe.

Onboarding runs on the server, so an image URL in a request makes the server
connect wherever the client points it. :class:`ImageURLPolicy` therefore
refuses, unless configured otherwise:

* any scheme but ``https`` (``http`` only when listed in ``schemes``);
* hosts that resolve to a loopback, private, link-local, multicast, reserved,
  unspecified or otherwise non-global address -- *every* resolved address is
  checked, and the connection goes to a checked address, so a second DNS
  answer cannot swap in another host between the check and the connect;
* redirects whose target would itself be refused (each hop is re-checked,
  at most ``max_redirects`` hops);
* bodies over ``max_bytes`` (by Content-Length, and counted while streaming:
  the download stops as soon as the cap is passed);
* downloads that take longer than ``timeout_s`` in total (DNS, connect,
  headers, body and redirects together; a server dripping bytes is cut off).

Proxies from the environment are not used (a proxy would connect on our
behalf, past the address check). The body is written atomically to a file in
a folder the caller owns and cleans, so the ordinary image loader
(:func:`mmrec.encoders.image.load_image`: size and decompression-bomb checks)
reads it like any local file. Messages show URLs without their query string,
which may carry signed tokens.
"""
from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import math
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union
from urllib.parse import SplitResult, urljoin, urlsplit

from mmrec import __version__
from mmrec.atomic import atomic_path
from mmrec.errors import MMRecError
from mmrec.hashing import text_hash
from mmrec.urls import is_url

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_REDIRECTS = 3
DISABLED_REASON = "image URLs are disabled; enable with --allow-image-urls"
KNOWN_SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)
MAX_WORKERS = 8
_CHUNK = 64 * 1024
_HEADERS = {"User-Agent": f"mmrec/{__version__} (item image onboarding)", "Accept": "image/*",
            "Accept-Encoding": "identity"}

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def is_image_url(value: object) -> bool:
    """True for a string starting with ``http://`` or ``https://`` (any case): a URL, not a local path."""
    return is_url(value, KNOWN_SCHEMES)


def display_url(url: str, limit: int = 200) -> str:
    """``url`` for messages and logs: the query and fragment (signed tokens) replaced by ``?...``, shortened."""
    try:
        parts = urlsplit(url)
        shown = parts._replace(query="", fragment="").geturl() + ("?..." if parts.query or parts.fragment else "")
    except ValueError:
        shown = url
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class ImageFetchError(MMRecError):
    """An image URL was refused or could not be downloaded.

    ``reason`` is a short code: ``disabled``, ``bad_url``, ``bad_scheme``,
    ``private_address``, ``redirect``, ``http_status``, ``too_large``,
    ``timeout`` or ``network``; ``detail`` says it in words.
    """

    def __init__(self, url: str, reason: str, detail: str) -> None:
        self.url, self.reason, self.detail = url, reason, detail
        super().__init__(f"image URL {display_url(url)}: {detail}")


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise MMRecError(message)


@dataclass(frozen=True)
class ImageURLPolicy:
    """Whether and how item image URLs are downloaded while onboarding (the default: not at all)."""

    enabled: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S
    schemes: Sequence[str] = ("https",)
    allow_private_hosts: bool = False
    max_redirects: int = DEFAULT_MAX_REDIRECTS

    def __post_init__(self) -> None:
        _require(isinstance(self.max_bytes, int) and not isinstance(self.max_bytes, bool) and self.max_bytes > 0,
                 f"image URL policy: max_bytes must be a positive integer, got {self.max_bytes!r}")
        _require(isinstance(self.timeout_s, (int, float)) and not isinstance(self.timeout_s, bool)
                 and math.isfinite(self.timeout_s) and self.timeout_s > 0,
                 f"image URL policy: timeout_s must be a finite number > 0, got {self.timeout_s!r}")
        _require(isinstance(self.max_redirects, int) and not isinstance(self.max_redirects, bool)
                 and self.max_redirects >= 0,
                 f"image URL policy: max_redirects must be an integer >= 0, got {self.max_redirects!r}")
        schemes = (self.schemes,) if isinstance(self.schemes, str) else tuple(self.schemes)
        schemes = tuple(dict.fromkeys(str(s).lower() for s in schemes))
        _require(bool(schemes) and set(schemes) <= set(KNOWN_SCHEMES),
                 f"image URL policy: schemes must be a non-empty subset of {KNOWN_SCHEMES}, got {self.schemes!r}")
        object.__setattr__(self, "schemes", schemes)  # a tuple: the policy stays hashable

    def describe(self) -> str:
        """One line for logs: what a server with this policy will download."""
        if not self.enabled:
            return "image URLs disabled"
        hosts = "any host" if self.allow_private_hosts else "public hosts only"
        return (f"image URLs enabled: {'/'.join(self.schemes)}, {hosts}, up to {self.max_bytes / 2**20:g} MB "
                f"and {self.timeout_s:g} s each, at most {self.max_redirects} redirects")


# -- checks -----------------------------------------------------------------------------------

def address_refusal(ip: Address) -> Optional[str]:
    """Why a connection to ``ip`` is refused by default (``"loopback"``, ``"private"``, ...), or None if public."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = mapped
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-global"


def _check_url(url: str, original: str, policy: ImageURLPolicy) -> SplitResult:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ImageFetchError(original, "bad_url", f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    hop = "" if url == original else f" (redirected to {display_url(url)})"
    if scheme not in policy.schemes:
        allowed = " or ".join(policy.schemes)
        raise ImageFetchError(original, "bad_scheme", f"scheme {scheme or '(none)'!r} is not allowed{hop}; "
                                                      f"only {allowed}")
    if not parts.hostname:
        raise ImageFetchError(original, "bad_url", f"no host in the URL{hop}")
    if parts.username is not None or parts.password is not None:
        raise ImageFetchError(original, "bad_url", f"URLs with credentials are not supported{hop}")
    if port == 0:
        raise ImageFetchError(original, "bad_url", f"port 0 is not valid{hop}")
    return parts


def _resolve(host: str, port: int, deadline: float, original: str) -> list[str]:
    """The addresses ``host`` resolves to; DNS gets the remaining time (getaddrinfo has no timeout of its own)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    box: dict = {}

    def lookup() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            box["error"] = exc

    worker = threading.Thread(target=lookup, name="mmrec-dns", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise ImageFetchError(original, "timeout", f"resolving {host} took too long")
    if "error" in box:
        raise ImageFetchError(original, "network", f"cannot resolve host {host} ({box['error']})")
    addrs = list(dict.fromkeys(info[4][0] for info in box["infos"]))
    if not addrs:
        raise ImageFetchError(original, "network", f"host {host} has no address")
    return addrs


def _check_addresses(host: str, addrs: list[str], original: str, policy: ImageURLPolicy) -> None:
    if policy.allow_private_hosts:
        return
    for addr in addrs:
        why = address_refusal(ipaddress.ip_address(addr.split("%", 1)[0]))
        if why:
            raise ImageFetchError(original, "private_address",
                                  f"host {host} resolves to {addr} ({why} address); only public hosts are allowed")


# -- connections ------------------------------------------------------------------------------

def _connect_any(addrs: list[str], port: int, timeout: float) -> socket.socket:
    error: Optional[OSError] = None
    for addr in addrs:
        try:
            return socket.create_connection((addr, port), timeout=timeout)
        except OSError as exc:
            error = exc
    assert error is not None
    raise error


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked addresses, not to whatever the host name resolves to at connect time."""

    def __init__(self, host: str, port: int, addrs: list[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addrs = addrs

    def connect(self) -> None:
        self.sock = _connect_any(self._addrs, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the checked addresses; the certificate is verified against the host name (SNI)."""

    def __init__(self, host: str, port: int, addrs: list[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._addrs = addrs

    def connect(self) -> None:
        sock = _connect_any(self._addrs, self.port, self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


@contextlib.contextmanager
def _deadline_watchdog(conn: http.client.HTTPConnection, deadline: float) -> Iterator[None]:
    """Shut the socket down at ``deadline``: socket timeouts bound each read, not a server dripping bytes."""

    def cut() -> None:
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# -- download ---------------------------------------------------------------------------------

def _too_large(original: str, policy: ImageURLPolicy, what: str) -> ImageFetchError:
    return ImageFetchError(original, "too_large", f"{what} is over the limit of {policy.max_bytes} bytes "
                                                  f"({policy.max_bytes / 2**20:g} MB)")


def _save_body(resp: http.client.HTTPResponse, target: Path, policy: ImageURLPolicy, deadline: float,
               original: str) -> int:
    length_header = (resp.getheader("Content-Length") or "").strip()
    length = int(length_header) if length_header.isdigit() else None
    if length is not None and length > policy.max_bytes:
        raise _too_large(original, policy, f"the image ({length} bytes by Content-Length)")
    n = 0
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        while True:
            block = resp.read1(_CHUNK)
            if time.monotonic() >= deadline:
                raise ImageFetchError(original, "timeout", f"download took longer than {policy.timeout_s:g} s")
            if not block:
                break
            n += len(block)
            if n > policy.max_bytes:
                raise _too_large(original, policy, "the image body")
            fh.write(block)
        if length is not None and n < length:
            raise ImageFetchError(original, "network", f"the body ended after {n} of {length} bytes")
    return n


def fetch_image(url: str, dest_dir: str | Path, policy: ImageURLPolicy) -> Path:
    """Download the image at ``url`` into ``dest_dir`` (which the caller cleans up) under ``policy``.

    Returns the file's path; raises :class:`ImageFetchError` naming the URL and
    the reason. Nothing is left in ``dest_dir`` on failure.
    """
    if not policy.enabled:
        raise ImageFetchError(url, "disabled", DISABLED_REASON)
    started = time.monotonic()
    deadline = started + policy.timeout_s
    target = Path(dest_dir) / f"url-{text_hash(url, errors='surrogatepass')[:32]}"
    current = url
    try:
        for _hop in range(policy.max_redirects + 1):
            parts = _check_url(current, url, policy)
            secure = parts.scheme.lower() == "https"
            port = parts.port or (443 if secure else 80)
            host = parts.hostname
            addrs = _resolve(host, port, deadline, url)
            _check_addresses(host, addrs, url, policy)
            cls = _PinnedHTTPSConnection if secure else _PinnedHTTPConnection
            conn = cls(host, port, addrs, timeout=max(0.001, deadline - time.monotonic()))
            try:
                conn.connect()
                with _deadline_watchdog(conn, deadline):
                    conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                                 headers=_HEADERS)
                    resp = conn.getresponse()
                    if resp.status in REDIRECTS:
                        location = resp.getheader("Location")
                        if not location:
                            raise ImageFetchError(url, "http_status", f"HTTP {resp.status} without a Location")
                        current = urljoin(current, location.strip())
                        continue
                    if resp.status != 200:
                        raise ImageFetchError(url, "http_status", f"HTTP {resp.status} {resp.reason}".strip())
                    n = _save_body(resp, target, policy, deadline, url)
            finally:
                conn.close()
            log.debug("fetched %s (%d bytes) in %.2fs", display_url(url), n, time.monotonic() - started)
            return target
    except ImageFetchError:
        raise
    except http.client.InvalidURL as exc:  # e.g. control characters in the path
        raise ImageFetchError(url, "bad_url", f"not a valid URL ({exc})") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if time.monotonic() >= deadline or isinstance(exc, TimeoutError):
            raise ImageFetchError(url, "timeout", f"download took longer than {policy.timeout_s:g} s") from None
        raise ImageFetchError(url, "network", f"download failed: {type(exc).__name__}: {exc}") from None
    raise ImageFetchError(url, "redirect", f"more than {policy.max_redirects} redirects")


def fetch_images(urls: Sequence[str], dest_dir: str | Path, policy: ImageURLPolicy,
                 workers: int = MAX_WORKERS) -> dict[str, Union[Path, ImageFetchError]]:
    """:func:`fetch_image` for many URLs (each once, a few at a time): URL -> file path or the error."""
    unique = list(dict.fromkeys(urls))
    if not unique:
        return {}

    def one(u: str) -> Union[Path, ImageFetchError]:
        try:
            return fetch_image(u, dest_dir, policy)
        except ImageFetchError as exc:
            return exc
        except Exception as exc:  # one odd URL must not sink the batch
            log.warning("fetching %s failed unexpectedly", display_url(u), exc_info=exc)
            return ImageFetchError(u, "network", f"download failed: {type(exc).__name__}: {exc}")

    if len(unique) == 1 or workers <= 1:
        return {u: one(u) for u in unique}
    with ThreadPoolExecutor(max_workers=min(workers, len(unique)), thread_name_prefix="mmrec-fetch") as pool:
        return dict(zip(unique, pool.map(one, unique)))
