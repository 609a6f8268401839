"""A private, authenticated S3 endpoint backed by SeaweedFS (``weed mini``).

Tests and local development need a real S3 server - with signatures checked -
rather than mocks, so that credential mistakes and S3 semantics (no rename,
objects appear only when an upload completes) show up before production.
:class:`SeaweedS3` starts one ``weed mini`` on loopback ports nobody else uses,
with its own data directory, identity file and log, and stops it again.
Dev tooling, so it lives in ``devtools/``, outside the installed packages (see ``devtools/__init__.py``).

    with SeaweedS3() as s3:
        os.environ.update(s3.env())
        s3.create_bucket("reviews")
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import shutil
import signal
import string
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Self

from devtools.weed_host import GRPC_OFFSET, SeaweedError, find_weed, pick_ports

log = logging.getLogger(__name__)

REGION = "us-east-1"
# Components of `weed mini` that listen on TCP; each gets an explicit port so
# parallel instances never fall back to the shared defaults (8333, 9333, ...).
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
_STOP_GRACE_S = 10.0
_PORT_ATTEMPTS = 3


def _random_key(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


class SeaweedS3:
    """One ``weed mini`` process serving S3 on ``127.0.0.1`` with authentication on.

    ``dir``: where data, the identity file and ``weed.log`` live; a temporary
    directory (deleted on stop) when omitted.  ``port``: the S3 port (all other
    ports are picked automatically).  ``access_key``/``secret_key``: generated
    when omitted.
    """

    def __init__(
        self,
        dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        # Without a dir, start() makes a temporary one and stop() deletes it.
        self.dir: Path | None = Path(dir).resolve() if dir is not None else None
        self._owns_dir = False
        self.access_key = access_key or "AK" + _random_key(string.ascii_uppercase + string.digits, 18)
        self.secret_key = secret_key or _random_key(string.ascii_letters + string.digits, 40)
        self.region = REGION
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        self._wanted_port = port
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    # -- public surface -------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._ports:
            raise SeaweedError("SeaweedS3 is not started")
        return self._ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        if self.dir is None:
            raise SeaweedError("SeaweedS3 is not started")
        return self.dir / "weed.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def env(self) -> dict[str, str]:
        """AWS_* variables that point boto3, pyarrow and the AWS CLI at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": self.region,
            # No EC2 here: skip the instance-metadata probe that stalls credential lookups.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client signed with this server's keys (path-style, SigV4)."""
        import boto3
        from botocore.config import Config

        settings: dict[str, Any] = {
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"},
            "connect_timeout": 5,
            "read_timeout": 60,
            "retries": {"mode": "standard", "max_attempts": 3},
        }
        settings.update(config)
        # A private session: the process-wide default one is not thread-safe to create.
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**settings),
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name``; returns its ``s3://name`` URI."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def delete_bucket(self, name: str, client=None) -> None:
        """Empty bucket ``name`` (objects and unfinished uploads) and delete it.

        SeaweedFS gives every bucket a volume of its own and caps how many exist, so
        long test sessions must give them back.
        """
        client = client or self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        client.delete_bucket(Bucket=name)

    def start(self) -> Self:
        if self._proc is not None:
            return self
        weed = find_weed()
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="seaweed-s3-")).resolve()
            self._owns_dir = True
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        identity = self._write_identity()
        began = time.monotonic()
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._launch(weed, data, identity)
                if self._wait_ready():
                    break
                # Another process took one of our ports between the check and weed's bind.
                log.info("weed could not bind its ports (attempt %d), retrying with others", attempt)
                self._reap()
            else:
                raise SeaweedError(f"weed kept failing to bind free ports{self._log_tail()}")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        atexit.register(self.stop)
        log.info("SeaweedFS S3 at %s (pid %d) ready in %.1f s", self.endpoint, self._proc.pid, self.startup_seconds)
        return self

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until weed exits (or ``timeout`` passes; then None); returns its exit code."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGTERM, up to 10 s grace, then SIGKILL.  Safe to call any number of times."""
        atexit.unregister(self.stop)
        self._reap()
        if self._owns_dir and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir, self._owns_dir = None, False  # a restart gets a fresh temporary dir

    def log_tail(self, lines: int = 40) -> str:
        if self.dir is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:  # never the secret
        where = self.endpoint if self.running else "not running"
        return f"SeaweedS3({where}, access_key={self.access_key!r}, dir={str(self.dir)!r})"

    # -- internals ---------------------------------------------------------------

    def _write_identity(self) -> Path:
        identity = {
            "identities": [
                {
                    "name": "reviews-local",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.dir / "s3-identity.json"
        # Owner-only from the first byte: the file holds the secret key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(identity, f)
        os.chmod(path, 0o600)  # O_CREAT's mode does not apply to an existing file
        return path

    def _launch(self, weed: str, data: Path, identity: Path) -> None:
        # The first port is the caller's S3 port when one was asked for.
        s3_port, *others = pick_ports(len(_COMPONENTS), self._wanted_port)
        self._ports = {"s3": s3_port, **dict(zip((c for c in _COMPONENTS if c != "s3"), others))}
        args = [
            # Global flags: glog would otherwise scatter weed.* files in $TMPDIR, and
            # toml settings (security.toml, filer.toml) are looked up in our dir only.
            weed, "-logtostderr", f"-config_dir={self.dir}",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={identity}",  # without an identity file weed serves S3 anonymously
            "-master.telemetry=false",
            "-s3.autoCreateBucket=false",
            "-s3.allowDeleteBucketNotEmpty=false",
            # Small volumes: weed gives every bucket its own volume and caps their
            # count at free disk / volume size, so 1 GiB volumes run out after a
            # few dozen buckets on a small disk.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=500",
            # Not needed here, and each would listen on yet another port.
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        for name, p in self._ports.items():
            args += [f"-{name}.port={p}", f"-{name}.port.grpc={p + GRPC_OFFSET}"]
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep what we can in our dir
        # (sun_path is limited to 108 bytes, so only when the path is short enough).
        for name in ("filer", "s3"):
            sock = self.dir / f"{name}.sock"
            if len(str(sock)) < 100:
                args.append(f"-{name}.localSocket={sock}")
        env = dict(os.environ, GOMEMLIMIT="256MiB")
        with open(self.log_path, "wb") as logf:
            # Own session: a terminal Ctrl-C reaches only our process, which then stops weed in order.
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                env=env, cwd=self.dir, start_new_session=True,
            )

    def _wait_ready(self) -> bool:
        """True once S3 answers a signed request and a volume server has registered.

        False if weed died because a port was taken; raises on any other failure.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        assert self._proc is not None
        client = self.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        deadline = time.monotonic() + self.start_timeout
        last: object = "no answer yet"
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                tail = self.log_tail(200).lower()
                clash = "is not available" in tail or "address already in use" in tail
                if clash and self._wanted_port is None:
                    return False
                raise SeaweedError(f"weed exited with code {rc} during startup{self._log_tail()}")
            try:
                client.list_buckets()
                if self._volume_registered():
                    return True
                last = "S3 is up but no volume server has registered with the master yet"
            except (BotoCoreError, ClientError) as exc:
                last = exc
            time.sleep(0.1)
        raise SeaweedError(
            f"SeaweedFS S3 at {self.endpoint} not ready after {self.start_timeout:g} s (last: {last})"
            f"{self._log_tail()}"
        )

    def _volume_registered(self) -> bool:
        # A bucket's first write needs the master to know a volume server with free slots.
        url = f"http://127.0.0.1:{self._ports['master']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                topology = json.load(resp).get("Topology", {})
        except (OSError, ValueError):
            return False
        return topology.get("Max", 0) > 0

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("weed (pid %d) ignored SIGTERM for %.0f s; killing it", proc.pid, _STOP_GRACE_S)
                proc.kill()
                proc.wait()
        self._remove_stale_sockets()

    def _remove_stale_sockets(self) -> None:
        # weed leaves /tmp/seaweedfs-<component>-grpc-<port>.sock behind even on a clean
        # exit (the path is fixed, not configurable).  Ours are dead now; remove them.
        for name, p in self._ports.items():
            sock = Path(f"/tmp/seaweedfs-{name}-grpc-{p + GRPC_OFFSET}.sock")
            try:
                if sock.is_socket() and sock.lstat().st_uid == os.getuid():
                    sock.unlink()
            except OSError:
                pass

    def _log_tail(self) -> str:
        tail = self.log_tail()
        return f"\n--- {self.log_path} (last lines) ---\n{tail}" if tail else f" (no output in {self.log_path})"
