"""The master client: the API's calls, one-line errors.

Owns how the CLI and the node agent talk to the master: where it is and which
token to send (``--master``/``--token``, then ``SLAPNODE_MASTER``/
``SLAPNODE_TOKEN``, then the client config file), and turning any failure (of
the wire, :mod:`slapnode.transport`, or said by the master) into a
:class:`MasterError` whose message is the master's one-line ``detail``.
"""

import configparser
import json as _json
import os
from pathlib import Path
from urllib.parse import quote

from . import transport
from .errors import MasterError, UsageError

API = "/api/v1"
DEFAULT_TIMEOUT = 30


def client_config_path():
    explicit = os.environ.get("SLAPNODE_CLIENT_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "slapnode" / "client.cfg"


def read_client_config(path=None):
    """``{"master": ..., "token": ...}`` from the client config file (may be empty)."""
    path = Path(path) if path else client_config_path()
    if not path.exists():
        return {}
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise UsageError(f"{path}: not a valid client config ({exc.message.splitlines()[0]}); "
                         "fix or remove it") from None
    if not parser.has_section("client"):
        return {}
    return {k: v for k, v in parser.items("client") if k in ("master", "token", "ca")}


def write_client_config(master, token, path=None, ca=None):
    path = Path(path) if path else client_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(f"[client]\nmaster = {master}\ntoken = {token}\n"
                     + (f"ca = {ca}\n" if ca else ""))
    return path


def resolve(master=None, token=None):
    """Fill in master URL and token from the environment and the config file."""
    saved = None
    if not master or not token:
        saved = read_client_config()
    master = master or os.environ.get("SLAPNODE_MASTER") or saved.get("master")
    token = token or os.environ.get("SLAPNODE_TOKEN") or saved.get("token")
    return master, token


def ca_for(master):
    """The CA pinned for ``master`` (``SLAPNODE_CA``, or the client config's when it is
    that config's master), or None: then the system's trust store is used."""
    explicit = os.environ.get("SLAPNODE_CA")
    if explicit:
        return explicit
    saved = read_client_config()
    if saved.get("ca") and (saved.get("master") or "").rstrip("/") == (master or "").rstrip("/"):
        return saved["ca"]
    return None


def _tls_problem(master, exc, ca_file):
    """One line saying what to check when TLS with the master fails."""
    text = str(exc)
    if "hostname" in text.lower() or "doesn't match" in text or "IP address mismatch" in text:
        return (f"the master's certificate is not for the host in {master}; use a name it was "
                "made for (`master init --name`)")
    if "expired" in text.lower():
        return f"the master's certificate has expired; its admin must renew it ({master})"
    if "certificate verify failed" in text.lower():
        return (f"the master's certificate is not trusted ({master}); "
                + ("it does not chain to the pinned CA: check the master URL"
                   if ca_file else "pin its CA: `slapnode login URL --ca-fingerprint SHA256:…` "
                   "(or `node register --ca-fingerprint`), as `master init` printed it"))
    return f"TLS with the master at {master} failed: {text.splitlines()[0][:200]}"


class Client:
    def __init__(self, master, token=None, timeout=DEFAULT_TIMEOUT, retries=3, ca_file=None):
        if not master:
            raise UsageError("no master given; pass --master URL or set SLAPNODE_MASTER")
        if not master.startswith(("http://", "https://")):
            raise UsageError(f"master {master!r} must be an http:// or https:// URL")
        self.master = master.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file
        headers = {"User-Agent": "slapnode-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # a pinned CA is the only one trusted for this master; else the system's store
        self.transport = transport.Transport(self.master, ca_file=ca_file, retries=retries,
                                             headers=headers)

    def _failure(self, exc):
        """A wire failure as the one line a user reads."""
        if isinstance(exc, transport.TLSFailure):
            return MasterError(_tls_problem(self.master, exc, self.ca_file))
        if isinstance(exc, transport.Unreachable):
            return MasterError(f"cannot reach the master at {self.master}; is it running "
                               "(`slapnode master serve`) and is --master right?")
        if isinstance(exc, transport.TimedOut):
            return MasterError(f"the master at {self.master} did not answer in time")
        return MasterError(f"talking to the master at {self.master} failed: {exc}")

    def call(self, method, path, timeout=None, params=None, json=None, data=None, headers=None):
        url = f"{self.master}{API}{path}"
        body, sent_headers = data, dict(headers or {})
        if json is not None:
            body = _json.dumps(json).encode()
            sent_headers["Content-Type"] = "application/json"
        elif data is not None and hasattr(data, "fileno"):
            sent_headers["Content-Length"] = str(os.fstat(data.fileno()).st_size)
        try:
            response = self.transport.request(method, API + path, params=params, body=body,
                                              headers=sent_headers,
                                              timeout=timeout or self.timeout)
        except transport.Failure as exc:
            raise self._failure(exc) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except (ValueError, AttributeError):
                detail = None
            if not isinstance(detail, str) or not detail:
                detail = f"HTTP {response.status_code} from {url}"
            raise MasterError(detail, status=response.status_code)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise MasterError(f"the master at {self.master} answered something that is not JSON; "
                              "is --master the slapnode master?") from None

    def get(self, path, timeout=None):
        """GET a path outside the API (``/api/v1/ca.crl``…): the raw bytes."""
        try:
            response = self.transport.request("GET", path, timeout=timeout or self.timeout)
        except transport.Failure as exc:
            raise self._failure(exc) from None
        if response.status_code != 200:
            raise MasterError(f"HTTP {response.status_code} from {self.master}{path}",
                              status=response.status_code)
        return response.content

    # users
    def me(self):
        return self.call("GET", "/me")

    def add_user(self, name, admin=False, email=""):
        return self.call("POST", "/users", json={"name": name, "admin": admin, "email": email})

    def list_users(self):
        return self.call("GET", "/users")

    def change_user(self, name, **changes):
        return self.call("PATCH", f"/users/{quote(name, safe='')}", json=changes)

    def invite_user(self, name):
        return self.call("POST", f"/users/{quote(name, safe='')}/invite")

    def set_password(self, name, password):
        return self.call("PUT", f"/users/{quote(name, safe='')}/password", json={"password": password})

    # tokens
    def list_tokens(self):
        return self.call("GET", "/tokens")

    def create_token(self, name, expires_at=None):
        return self.call("POST", "/tokens", json={"name": name, "expires_at": expires_at})

    def revoke_token(self, name):
        return self.call("DELETE", f"/tokens/{quote(name, safe='')}")

    # volunteer credit
    def computer_credit(self, computer=None, month=None):
        params = {k: v for k, v in (("computer", computer), ("month", month)) if v}
        return self.call("GET", "/credit", params=params or None)

    def credit_top(self, limit=20, month=None):
        params = {"limit": limit, **({"month": month} if month else {})}
        return self.call("GET", "/credit/top", params=params)

    # invoices
    def list_invoices(self, user=None):
        return self.call("GET", "/invoices", params={"user": user} if user else None)

    def show_invoice(self, number, month=None, user=None):
        if number == "draft":
            params = {k: v for k, v in (("month", month), ("user", user)) if v}
            return self.call("GET", "/invoices/draft", params=params or None)
        return self.call("GET", f"/invoices/{quote(number, safe='')}")

    def close_invoices(self, month):
        return self.call("POST", "/invoices/close", json={"month": month})

    def credit_invoice(self, number, reason):
        return self.call("POST", f"/invoices/{quote(number, safe='')}/credit", json={"reason": reason})

    # groups and networks
    def list_groups(self):
        return self.call("GET", "/groups")

    def create_group(self, name):
        return self.call("POST", "/groups", json={"name": name})

    def add_group_member(self, name, user):
        return self.call("POST", f"/groups/{quote(name, safe='')}/members", json={"user": user})

    def remove_group_member(self, name, user):
        return self.call("DELETE", f"/groups/{quote(name, safe='')}/members/{quote(user, safe='')}")

    def list_networks(self):
        return self.call("GET", "/networks")

    def create_network(self, name):
        return self.call("POST", "/networks", json={"name": name})

    def add_network_computer(self, name, computer):
        return self.call("POST", f"/networks/{quote(name, safe='')}/computers",
                         json={"computer": computer})

    def remove_network_computer(self, name, computer):
        return self.call("DELETE",
                         f"/networks/{quote(name, safe='')}/computers/{quote(computer, safe='')}")

    # catalog
    def add_software(self, url, title, price="0", description="", schema=None, price_cpu_hour="0",
                     price_disk_gb_month="0", version=""):
        return self.call("POST", "/software", json={
            "url": url, "title": title, "price": price, "description": description,
            "schema": schema, "price_cpu_hour": price_cpu_hour,
            "price_disk_gb_month": price_disk_gb_month, "version": version})

    def list_software(self):
        return self.call("GET", "/software")

    def show_software(self, ref, version=None):
        return self.call("GET", "/software/release",
                         params={"ref": ref, **({"version": version} if version else {})})

    def supply(self, software, node, state="available"):
        return self.call("POST", "/supplies", json={"software": software, "node": node,
                                                    "state": state})

    # computers
    def create_enrollment_token(self, name, scope=None):
        return self.call("POST", "/enrollment-tokens", json={"name": name, "scope": scope})

    def list_computers(self):
        return self.call("GET", "/computers")

    def show_computer(self, name):
        return self.call("GET", f"/computers/{quote(name, safe='')}")

    def set_scope(self, name, scope, friends=None):
        return self.call("PATCH", f"/computers/{quote(name, safe='')}",
                         json={"scope": scope, "friends": friends})

    def set_trusted(self, name, trusted=True):
        return self.call("PATCH", f"/computers/{quote(name, safe='')}",
                         json={"trusted_builder": trusted})

    # instances
    def request_instance(self, **body):
        return self.call("POST", "/instances", json=body)

    def list_instances(self):
        return self.call("GET", "/instances")

    def show_instance(self, title, wait=0, owner=None):
        params = {k: v for k, v in (("wait", wait), ("owner", owner)) if v}
        return self.call("GET", f"/instances/{quote(title, safe='')}", params=params or None,
                         timeout=(self.timeout + wait) if wait else None)

    def change_instance(self, title, state, owner=None):
        return self.call("PATCH", f"/instances/{quote(title, safe='')}", json={"state": state},
                         params={"owner": owner} if owner else None)

    def instance_usage(self, title, owner=None, resolution="hourly", since=None, until=None):
        params = {k: v for k, v in (("owner", owner), ("resolution", resolution), ("since", since),
                                    ("until", until)) if v}
        return self.call("GET", f"/instance-usage/{quote(title, safe='')}", params=params)

    def computer_usage(self, name, since=None, until=None):
        params = {k: v for k, v in (("since", since), ("until", until)) if v}
        return self.call("GET", f"/computers/{quote(name, safe='')}/usage", params=params)

    def instance_history(self, title, owner=None):
        return self.call("GET", f"/instance-history/{quote(title, safe='')}",
                         params={"owner": owner} if owner else None)

    # node side
    def enroll(self, token, name=None, capacity=None):
        return self.call("POST", "/node/enroll", json={"token": token, "name": name,
                                                       "capacity": capacity or {}})

    def report_capacity(self, capacity):
        return self.call("PUT", "/node/capacity", json=capacity)

    def report_partitions(self, partitions):
        return self.call("PUT", "/node/partitions", json={"partitions": partitions})

    def desired_state(self, after=None, wait=0):
        params = {}
        if after is not None:
            params["after"] = after
        if wait:
            params["wait"] = wait
        return self.call("GET", "/node/desired-state", params=params,
                         timeout=self.timeout + wait)

    def report(self, software=(), instances=(), shared=(), availability=None):
        body = {"software": list(software), "instances": list(instances), "shared": list(shared)}
        if availability is not None:
            body["availability"] = availability
        return self.call("POST", "/node/report", json=body)

    # binary cache (node side)
    def sign_certificate(self, partition, instance_id, csr):
        return self.call("POST", "/node/certificate", json={
            "partition": partition, "instance_id": instance_id, "csr": csr})

    def send_mail(self, partition, instance_id, sender, recipients, message):
        """Pass a partition's message (bytes) on to the master's smarthost."""
        import base64

        return self.call("POST", "/node/mail", timeout=max(self.timeout, 60), json={
            "partition": partition, "instance_id": instance_id, "sender": sender,
            "recipients": list(recipients), "message": base64.b64encode(message).decode()})

    def cache_lookup(self, key):
        try:
            return self.call("GET", f"/node/cache/{key}")
        except MasterError as exc:
            if exc.status == 404:
                return None
            raise

    def cache_download(self, key, path):
        try:
            answer = self.transport.open("GET", f"{API}/node/cache/{key}/archive",
                                         timeout=self.timeout)
        except transport.Failure as exc:
            raise MasterError(f"cache download failed: {self._failure(exc)}") from None
        try:
            if answer.status != 200:
                raise MasterError(f"cache download failed: HTTP {answer.status}",
                                  status=answer.status)
            with open(path, "wb") as out:
                while chunk := answer.read(1 << 20):
                    out.write(chunk)
        except OSError as exc:
            raise MasterError(f"cache download failed: {exc}") from None
        finally:
            if not answer.isclosed():
                self.transport.close()

    def cache_upload(self, key, path, digest, url, platform):
        with open(path, "rb") as stream:
            return self.call("PUT", f"/node/cache/{key}", data=stream, timeout=600,
                             params={"digest": digest, "url": url, "platform": platform},
                             headers={"Content-Type": "application/gzip"})
