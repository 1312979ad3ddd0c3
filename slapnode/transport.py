"""HTTP(S) to the master over the standard library: kept-alive connections, retries, TLS.

Owns the wire under :mod:`slapnode.client`: one kept-alive ``http.client``
connection per thread and master, TLS verified against the pinned CA (or the
system's store), connection attempts retried with backoff (a request that never
left is safe to send again, whatever its method), a reused connection the
master closed meanwhile replaced before it is used, and the environment's
proxies honoured (``https_proxy``/``no_proxy``, tunnelled with CONNECT).

It exists because every CLI command and every node pays for its imports: the
``requests`` stack costs about 0.15 s per process, more than half of what a
whole ``instance request --wait`` may take (docs/decisions.md). Failures are
raised as :class:`Unreachable`, :class:`TimedOut`, :class:`TLSFailure` or
:class:`Broken`; the client turns them into one-line errors.
"""

import http.client
import json
import select
import socket
import ssl
import threading
import time
import urllib.parse

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class Failure(Exception):
    """The request did not get an answer."""


class Unreachable(Failure):
    """No connection could be made."""


class TimedOut(Failure):
    """Connected, but no (whole) answer in time."""


class TLSFailure(Failure):
    """TLS with the master failed (certificate, name, protocol)."""


class Broken(Failure):
    """The connection broke during the exchange."""


class Response:
    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = headers
        self.content = body

    def json(self):
        return json.loads(self.content)


def _proxy_for(scheme, host):
    """(host, port) of the proxy the environment names for this URL, or None."""
    import urllib.request

    if urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy:
        return None
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname, parts.port or 80


def _dropped(connection):
    """True when a kept-alive connection was closed by the other side (it is readable
    while no answer is due: EOF, or junk we will not read)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Transport:
    """Requests to one base URL (scheme://host:port)."""

    def __init__(self, base, ca_file=None, retries=3, backoff=0.2, headers=None):
        parts = urllib.parse.urlsplit(base)
        self.scheme, self.host = parts.scheme, parts.hostname or ""
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.ca_file = ca_file
        self.retries, self.backoff = retries, backoff
        self.headers = dict(headers or {})
        self.local = threading.local()
        self._context = None

    def context(self):
        if self._context is None:
            self._context = ssl.create_default_context(cafile=str(self.ca_file)
                                                       if self.ca_file else None)
        return self._context

    def _new_connection(self, timeout):
        proxy = _proxy_for(self.scheme, self.host)
        if self.scheme == "https":
            if proxy:
                connection = http.client.HTTPSConnection(*proxy, timeout=timeout,
                                                         context=self.context())
                connection.set_tunnel(self.host, self.port)
                return connection, False
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=self.context()), False
        if proxy:
            return http.client.HTTPConnection(*proxy, timeout=timeout), True
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout), False

    def _connection(self, timeout):
        """(connection, absolute form needed, reused) for this thread."""
        held = getattr(self.local, "held", None)
        if held is not None:
            connection, absolute = held
            if not _dropped(connection):
                connection.timeout = timeout
                if connection.sock is not None:
                    connection.sock.settimeout(timeout)
                return connection, absolute, True
            connection.close()
        connection, absolute = self._new_connection(timeout)
        self.local.held = (connection, absolute)
        return connection, absolute, False

    def _forget(self):
        held = getattr(self.local, "held", None)
        self.local.held = None
        if held is not None:
            held[0].close()

    def target(self, path, params=None):
        query = ""
        if params:
            query = "?" + urllib.parse.urlencode(
                [(k, v) for k, v in params.items() if v is not None], doseq=True)
        return f"{self.prefix}{path}{query}"

    def open(self, method, path, params=None, body=None, headers=None, timeout=30):
        """Send a request; the ``http.client.HTTPResponse``, its body unread (the caller
        reads it before the next request on this thread). Raises a :class:`Failure`."""
        target = self.target(path, params)
        sent_headers = {**self.headers, **(headers or {})}
        attempt = 0
        while True:
            connection, absolute, reused = self._connection(timeout)
            if absolute:
                target_line = f"{self.scheme}://{self.host}:{self.port}{target}"
            else:
                target_line = target
            sent = False
            try:
                if connection.sock is None:
                    connection.connect()
                sent = True
                if hasattr(body, "seek"):
                    body.seek(0)
                connection.request(method, target_line, body=body, headers=sent_headers)
                return connection.getresponse()
            except ssl.SSLError as exc:
                self._forget()
                raise TLSFailure(str(exc)) from None
            except (socket.timeout, TimeoutError) as exc:
                self._forget()
                if sent:
                    raise TimedOut(str(exc) or "timed out") from None
                failure = Unreachable(f"timed out connecting to {self.host}:{self.port}")
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._forget()
                if not (reused and method in IDEMPOTENT):
                    raise Broken(str(exc) or type(exc).__name__) from None
                continue            # a kept-alive connection closed under us: once more, fresh
            except (OSError, http.client.HTTPException) as exc:
                self._forget()
                if sent:
                    raise Broken(str(exc) or type(exc).__name__) from None
                failure = Unreachable(str(exc))
            attempt += 1
            if attempt > self.retries:
                raise failure
            if attempt > 1:
                time.sleep(self.backoff * 2 ** (attempt - 1))

    def request(self, method, path, params=None, body=None, headers=None, timeout=30):
        """A whole exchange: :class:`Response` with the body read."""
        answer = self.open(method, path, params=params, body=body, headers=headers,
                           timeout=timeout)
        try:
            content = answer.read()
        except (socket.timeout, TimeoutError) as exc:
            self._forget()
            raise TimedOut(str(exc) or "timed out") from None
        except (OSError, http.client.HTTPException) as exc:
            self._forget()
            raise Broken(str(exc) or type(exc).__name__) from None
        if answer.will_close:
            self._forget()
        return Response(answer.status, answer.headers, content)

    def close(self):
        self._forget()
