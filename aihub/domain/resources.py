"""What a node's attempt holds of a cluster: CPU, memory and GPUs (a value type shared by the engine, which
hands leases out, and the services, whose shared ledger records them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resources:
    cpu_millis: int = 1000
    memory_mib: int = 1024
    gpu: int = 0
    gpu_type: str = ""
    gpu_devices: tuple[str, ...] = ()  # local executor: ids handed out as CUDA_VISIBLE_DEVICES
    node_selector: dict[str, str] = field(default_factory=dict)
