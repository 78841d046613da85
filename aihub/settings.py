"""Configuration from ``AIHUB_*`` environment variables.

Defaults need nothing else: SQLite in the user's data dir (``$XDG_DATA_HOME/aihub``, else
``~/.local/share/aihub``), the local executor, the in-process bus, artifacts and logs on local disk.

Every path setting is made absolute once, here, when the settings load (or a path setting is assigned): nothing
the product stores or hands to a process depends on the current directory afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/aihub``, else ``~/.local/share/aihub``: the same place from any directory."""
    base = os.environ.get("XDG_DATA_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / "aihub"


def absolute_path(value: str | os.PathLike[str]) -> Path:
    """``~`` expanded, relative to the current directory *now*, normalised (no ``..``; symlinks kept)."""
    return Path(os.path.abspath(Path(value).expanduser()))


def absolute_database_url(url: str) -> str:
    """A ``sqlite://`` URL with a relative file path made absolute; other URLs unchanged."""
    prefix = "sqlite://"
    if not url.startswith(prefix):
        return url
    path, sep, query = url[len(prefix) :].partition("?")
    if path in ("", ":memory:") or path.startswith("/"):
        return url
    return f"{prefix}{absolute_path(path)}{sep}{query}"


def parse_store_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` → (bucket, prefix without slashes at either end); ValueError naming the setting."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment:
        raise ValueError(f"AIHUB_ARTIFACT_STORE must look like s3://BUCKET/PREFIX, not {url!r}")
    return parsed.netloc, parsed.path.strip("/")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIHUB_", extra="ignore", env_ignore_empty=True, validate_assignment=True
    )

    data_dir: Path = Field(
        default_factory=default_data_dir, description="where SQLite, artifacts and logs live (made absolute)"
    )
    database_url: str | None = Field(
        default=None, description="sqlite://PATH or postgres://USER@HOST:PORT/DB; default SQLite in data_dir"
    )
    executor: Literal["local", "kubernetes", "container"] = Field(
        default="local", description="local: processes on this host; container: podman/docker; kubernetes"
    )
    container_engine: Literal["auto", "podman", "docker"] = Field(
        default="auto", description="the container executor's engine CLI (auto: podman, else docker)"
    )
    container_default_image: str = Field(
        default="python:3.11-slim", description="image of plain nodes that name none (container executor)"
    )
    container_network: str = Field(
        default="host", description="network of node containers (host: they reach the API like local nodes)"
    )
    container_keep: bool = Field(default=False, description="keep ended node containers (debugging)")
    builder: Literal["auto", "local", "container", "kubernetes"] = Field(
        default="auto",
        description="module builds: local (copies only), container (podman/docker build), kubernetes (Kaniko); "
        "auto: as the executor",
    )
    bus: Literal["memory", "kafka"] = "memory"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = "aihub"
    kafka_session_timeout_ms: int = Field(
        default=10_000, description="a dead engine worker's runs move after this"
    )
    kafka_heartbeat_interval_ms: int = 3_000
    kafka_rebalance_timeout_ms: int = 10_000
    shared_capacity: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="count virtual-cluster capacity in the database, across engine workers (auto: with kafka)",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    api_url: str | None = Field(default=None, description="URL nodes use to reach the API")
    admin_password: str | None = None
    secret_key: str | None = Field(default=None, description="signs session cookies; generated if unset")
    stop_grace_seconds: float = 10.0
    local_cpus: float | None = Field(default=None, description="CPUs of the built-in local cluster")
    local_memory_mib: int | None = None
    local_gpus: str | None = Field(default=None, description="comma-separated GPU ids, e.g. 0,1")
    local_isolation: Literal["auto", "off"] = "auto"
    local_run_as: str = Field(
        default="auto",
        description="user nodes run as: auto (nobody when the server is root), NAME, UID[:GID], or server",
    )
    max_text_output: int = 1000
    allow_file_git: bool = Field(default=False, description="allow file:// module repositories")
    kubernetes_namespace: str = "aihub"
    kubernetes_in_cluster: bool = False
    kubernetes_kubeconfig: str | None = Field(
        default=None, description="kubeconfig path (default $KUBECONFIG)"
    )
    kubernetes_context: str | None = None
    kubernetes_helper_image: str | None = Field(
        default=None, description="image that provides busybox to pods"
    )
    kubernetes_default_image: str | None = Field(default=None, description="image of nodes that name none")
    kubernetes_keep_pods: bool | None = Field(default=None, description="keep finished pods (debugging)")
    kubernetes_build_kaniko_image: str | None = Field(default=None, description="Kaniko executor image")
    kubernetes_build_git_image: str | None = Field(default=None, description="image that clones the module")
    kubernetes_build_registry_secret: str | None = Field(
        default=None, description="dockerconfigjson push secret"
    )
    kubernetes_build_insecure_registry: bool | None = None
    kubernetes_build_cpu: str | None = None
    kubernetes_build_memory: str | None = None
    kubernetes_build_timeout: float | None = Field(default=None, description="seconds; default 3600")
    registry: str = Field(default="registry.local:5000", description="where built module images are pushed")
    registry_insecure: bool = Field(
        default=False, description="the registry speaks plain HTTP / has an untrusted certificate"
    )
    # Bounds and trust (issue 11; docs/security.md)
    max_body_bytes: int = Field(
        default=8 * 1024**2, ge=1024, description="largest request body of any route but uploads (413 above)"
    )
    max_upload_bytes: int = Field(
        default=50 * 1024**3, ge=1024, description="largest artifact upload (streamed to disk)"
    )
    max_spec_bytes: int = Field(default=4 * 1024**2, ge=1024, description="largest workflow spec (YAML/JSON)")
    max_spec_nodes: int = Field(default=10_000, ge=1, description="most nodes in one workflow spec")
    max_query_cost: int = Field(
        default=1_000_000, ge=100, description="GraphQL cost budget of one operation (fields x list sizes)"
    )
    max_query_log_bytes: int = Field(
        default=64 * 1024**2, ge=1024, description="log bytes one GraphQL operation may ask for, all aliases"
    )
    max_log_bytes: int = Field(
        default=100 * 1024**2,
        ge=4096,
        description="log bytes kept per attempt: the head and the tail, with a note of what was dropped",
    )
    trusted_proxies: str = Field(
        default="",
        description="comma-separated proxy addresses whose X-Forwarded-For is believed (none by default)",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="json: one JSON object a line (level, time, logger, request id, run id, node)",
    )
    role: Literal["all", "api", "worker"] = Field(
        default="all",
        description="all: API, UI and engine; api: API and UI only; worker: engine and builds, health and metrics",
    )
    metrics_token: str | None = Field(
        default=None, description="bearer token /metrics wants; unset: /metrics answers 404"
    )
    artifact_store: str | None = Field(
        default=None,
        description="s3://BUCKET/PREFIX: artifacts and archived logs in that object store (default: the data dir)",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="the object store's URL (MinIO, Ceph, GCS …); unset: AWS S3"
    )
    s3_retry_seconds: float = Field(
        default=60.0, gt=0, description="how long a request to the object store is retried before it fails"
    )
    s3_presign_seconds: int = Field(
        default=3600, ge=60, le=7 * 24 * 3600, description="how long the presigned URLs handed to a node live"
    )
    git_allowed_hosts: str = Field(
        default="",
        description="comma-separated git hosts a module may name although they resolve to internal addresses",
    )

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return absolute_path(value)

    @field_validator("artifact_store", mode="after")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value:
            parse_store_url(value)
        return value

    @field_validator("kubernetes_kubeconfig", mode="after")
    @classmethod
    def _absolute_kubeconfig(cls, value: str | None) -> str | None:
        return str(absolute_path(value)) if value else value

    @field_validator("database_url", mode="after")
    @classmethod
    def _absolute_sqlite_url(cls, value: str | None) -> str | None:
        return absolute_database_url(value) if value else value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite://{self.data_dir / 'aihub.sqlite3'}"

    @property
    def shares_capacity(self) -> bool:
        """Several engine workers may share the clusters: count their capacity in the database."""
        if self.shared_capacity == "auto":
            return self.bus == "kafka"
        return self.shared_capacity == "on"

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.host}:{self.port}"

    def ensure_dirs(self) -> None:
        # a new data dir is its owner's alone (the database, logs and tokens' hashes live there)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        shared = () if self.artifact_store else ("artifacts",)  # an object store holds them instead
        for sub in (*shared, "logs", "runs", "builds"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)


def get_settings() -> Settings:
    return Settings()
