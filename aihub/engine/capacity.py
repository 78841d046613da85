"""Capacity of virtual clusters: a node starts only when its cluster has room for its resources.

A cluster is a pool of ``capacity`` x SKU (CPU, memory, GPUs). Compute tasks ask for ``sku_count`` SKUs;
monitor tasks always ask for 100m CPU and 1000 MiB. The built-in ``local`` cluster is this host. Waiting
requests are served first come, first served, but a small request may pass a large one that does not fit
(backfill), so one big node never idles the whole cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from aihub.engine.executors.base import Resources

MONITOR = Resources(cpu_millis=100, memory_mib=1000)


@dataclass(frozen=True)
class Sku:
    cpu_millis: int
    memory_mib: int
    gpu: int = 0
    gpu_type: str = ""


@dataclass
class Pool:
    name: str
    sku: Sku
    capacity: int
    node_selector: dict[str, str] = field(default_factory=dict)
    gpu_devices: list[str] = field(default_factory=list)  # host GPU ids (local executor)
    used_cpu: int = 0
    used_mem: int = 0
    used_gpu: int = 0

    @property
    def total(self) -> Resources:
        return Resources(
            cpu_millis=self.sku.cpu_millis * self.capacity,
            memory_mib=self.sku.memory_mib * self.capacity,
            gpu=self.sku.gpu * self.capacity,
        )

    def request(self, task_type: str, sku_count: int) -> Resources:
        if task_type == "monitor":
            return Resources(cpu_millis=100, memory_mib=1000, node_selector=self.node_selector)
        return Resources(
            cpu_millis=self.sku.cpu_millis * sku_count,
            memory_mib=self.sku.memory_mib * sku_count,
            gpu=self.sku.gpu * sku_count,
            gpu_type=self.sku.gpu_type,
            node_selector=self.node_selector,
        )

    def can_ever_fit(self, req: Resources) -> bool:
        total = self.total
        return (
            req.cpu_millis <= total.cpu_millis and req.memory_mib <= total.memory_mib and req.gpu <= total.gpu
        )

    def fits(self, req: Resources) -> bool:
        total = self.total
        return (
            self.used_cpu + req.cpu_millis <= total.cpu_millis
            and self.used_mem + req.memory_mib <= total.memory_mib
            and self.used_gpu + req.gpu <= total.gpu
        )

    def acquire(self, req: Resources) -> Resources:
        """Reserve ``req`` (caller checked ``fits``); hands out concrete GPU ids when the host has them."""
        self.used_cpu += req.cpu_millis
        self.used_mem += req.memory_mib
        self.used_gpu += req.gpu
        devices: tuple[str, ...] = ()
        if req.gpu and self.gpu_devices:
            devices = tuple(self.gpu_devices[: req.gpu])
            del self.gpu_devices[: req.gpu]
        return Resources(
            cpu_millis=req.cpu_millis,
            memory_mib=req.memory_mib,
            gpu=req.gpu,
            gpu_type=req.gpu_type,
            gpu_devices=devices,
            node_selector=req.node_selector,
        )

    def release(self, lease: Resources) -> None:
        self.used_cpu -= lease.cpu_millis
        self.used_mem -= lease.memory_mib
        self.used_gpu -= lease.gpu
        self.gpu_devices.extend(lease.gpu_devices)


def host_memory_mib() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 8192


def local_pool(cpus: float | None, memory_mib: int | None, gpus: str | None) -> Pool:
    """The built-in ``local`` cluster: one SKU per CPU of this host (1 CPU, an equal share of memory)."""
    n_cpu = max(1, int(cpus or os.cpu_count() or 1))
    mem = memory_mib or host_memory_mib()
    devices = [g.strip() for g in (gpus or "").split(",") if g.strip()]
    sku = Sku(cpu_millis=1000, memory_mib=max(1000, mem // n_cpu), gpu=0)
    return Pool(name="local", sku=sku, capacity=n_cpu, gpu_devices=devices)


class Capacity:
    """All pools; ``try_acquire`` never blocks — the scheduler retries waiting nodes on every release."""

    def __init__(self, pools: Iterable[Pool]) -> None:
        self.pools = {p.name: p for p in pools}

    def pool(self, name: str) -> Pool | None:
        return self.pools.get(name)
