"""The Kubernetes API client, set up once for the Kubernetes executor and the Kaniko build backend.

:class:`Cluster` loads the client configuration (in-cluster service account, or a kubeconfig file and
context; or a ready :class:`~kubernetes_asyncio.client.Configuration`, which the tests pass) on first use and
makes one ``ApiClient`` from it. API calls are made with ``_preload_content=False`` (:func:`call_options`) and
awaited with :func:`request`, which returns the JSON body as plain dicts or raises :class:`KubernetesApiError`
with the ``Status`` the server sent.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable
from typing import Any

from kubernetes_asyncio import client, config

__all__ = ["API_TIMEOUT", "Cluster", "KubernetesApiError", "call_options", "load_configuration", "request"]

#: seconds an API call (not a watch or a followed log) may take
API_TIMEOUT = 30.0


class KubernetesApiError(Exception):
    """A non-2xx answer of the API server, with the ``Status`` it sent."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_body(cls, status: int, body: bytes) -> KubernetesApiError:
        try:
            data = json.loads(body)
            return cls(status, str(data.get("reason", "")), str(data.get("message", "")))
        except (ValueError, AttributeError):
            return cls(status, "", body[:200].decode(errors="replace"))


async def load_configuration(
    *, in_cluster: bool, kubeconfig: str | None = None, context: str | None = None
) -> client.Configuration:
    """The cluster's client configuration: in-cluster (service account), or a kubeconfig file and context."""
    cfg = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=cfg)
    else:
        # $KUBECONFIG read now (kubernetes_asyncio reads it once, when imported)
        path = kubeconfig or os.environ.get("KUBECONFIG") or None
        await config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    return cfg


class Cluster:
    """One ``ApiClient`` for a cluster, made on first use (see the module docstring)."""

    def __init__(
        self,
        configuration: client.Configuration | None = None,
        *,
        in_cluster: bool = False,
        kubeconfig: str | None = None,
        context: str | None = None,
    ) -> None:
        self._configuration = configuration
        self._in_cluster = in_cluster
        self._kubeconfig = kubeconfig
        self._context = context
        self._api: client.ApiClient | None = None
        self._lock = asyncio.Lock()

    async def api(self) -> client.ApiClient:
        """The client; the configuration is loaded by the first call (its errors are raised to it)."""
        async with self._lock:
            if self._api is None:
                cfg = self._configuration or await load_configuration(
                    in_cluster=self._in_cluster, kubeconfig=self._kubeconfig, context=self._context
                )
                self._api = client.ApiClient(cfg)
            return self._api

    async def close(self) -> None:
        """Close the client's connections; a later :meth:`api` makes a new one."""
        if self._api is not None:
            api, self._api = self._api, None
            await api.close()


def call_options() -> dict[str, Any]:
    """Keyword arguments for an API call awaited with :func:`request`."""
    return {"_preload_content": False, "_request_timeout": API_TIMEOUT}


async def request(call: Awaitable[Any]) -> dict[str, Any]:
    """Await an API call made with :func:`call_options`; the JSON body, or :class:`KubernetesApiError`."""
    resp = await call
    try:
        body = await resp.read()
    finally:
        resp.release()
    if not 200 <= resp.status < 300:
        raise KubernetesApiError.from_body(resp.status, body)
    return json.loads(body)  # type: ignore[no-any-return]
