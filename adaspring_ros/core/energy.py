"""Energy meters: RAPL where the kernel exposes it, else CPU time x a device power model.

Both meters answer the same question — how many joules did this block of work cost — through
``start()`` / ``stop() -> EnergyReading``, so the profiler and the live node measure alike:

* :class:`RaplMeter` reads ``/sys/class/powercap/intel-rapl:<N>/energy_uj`` (package domains,
  Intel and recent AMD) and handles counter wrap-around. It measures the whole package, so it is
  only meaningful while nothing else is busy.
* :class:`PowerModelMeter` multiplies the CPU time of this process (all its threads) by the busy
  power per core of a :class:`DevicePowerModel` loaded from ``config/devices/<name>.yaml``, plus
  an optional static share per wall-clock second. It is an *estimate*; tables say which was used
  in ``energy_method``.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "DEFAULT_DEVICE",
    "DevicePowerModel",
    "EnergyReading",
    "RaplMeter",
    "PowerModelMeter",
    "load_device",
    "make_meter",
]

DEFAULT_DEVICE = "cloud_x86_vcpu"
RAPL_ROOT = "/sys/class/powercap"


@dataclass(frozen=True)
class EnergyReading:
    joules: float
    wall_s: float
    cpu_s: float
    method: str


@dataclass(frozen=True)
class DevicePowerModel:
    """energy = busy CPU-seconds x ``active_watts_per_core`` + wall-seconds x ``static_watts``."""

    name: str
    active_watts_per_core: float
    static_watts: float = 0.0
    description: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  where: str = "device profile") -> "DevicePowerModel":
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping")
        try:
            model = cls(
                name=str(data["name"]),
                active_watts_per_core=float(data["active_watts_per_core"]),
                static_watts=float(data.get("static_watts", 0.0)),
                description=str(data.get("description", "")),
            )
        except KeyError as exc:
            raise ValueError(f"{where}: missing key {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        if model.active_watts_per_core <= 0 or model.static_watts < 0:
            raise ValueError(f"{where}: power must be positive (active) and >= 0 (static)")
        return model

    def energy_j(self, cpu_s: float, wall_s: float) -> float:
        return cpu_s * self.active_watts_per_core + wall_s * self.static_watts


def load_device(name_or_path: str | Path = DEFAULT_DEVICE) -> DevicePowerModel:
    """A device power model by name (``config/devices/<name>.yaml``) or by path."""
    import yaml

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        from adaspring_ros.core.paths import config_dir

        path = config_dir() / "devices" / f"{name_or_path}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read device profile {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"device profile {path} is not valid YAML: {exc}") from exc
    return DevicePowerModel.from_dict(data, str(path))


class PowerModelMeter:
    """CPU time of this process x a device power model."""

    def __init__(self, device: DevicePowerModel) -> None:
        self.device = device
        self.method = (f"cpu_time_x_power_model:{device.name} "
                       f"({device.active_watts_per_core} W/busy core, "
                       f"{device.static_watts} W static)")
        self._t0 = (0.0, 0.0)

    def start(self) -> None:
        self._t0 = (time.perf_counter(), time.process_time())

    def stop(self) -> EnergyReading:
        wall = time.perf_counter() - self._t0[0]
        cpu = time.process_time() - self._t0[1]
        return EnergyReading(self.device.energy_j(cpu, wall), wall, cpu, self.method)


class RaplMeter:
    """Package energy from the powercap RAPL counters (microjoules, wrapping)."""

    method = "rapl"

    def __init__(self, root: str = RAPL_ROOT) -> None:
        # Top-level domains only (intel-rapl:0, intel-rapl:1): sub-domains are already included.
        self.domains = [Path(p) for p in sorted(glob.glob(f"{root}/intel-rapl:*"))
                        if p.count(":") == 1]
        self._start: list[int] = []
        self._t0 = (0.0, 0.0)

    @staticmethod
    def _read(domain: Path) -> int:
        return int((domain / "energy_uj").read_text())

    def available(self) -> bool:
        try:
            return bool(self.domains) and all(self._read(d) >= 0 for d in self.domains)
        except (OSError, ValueError):
            return False

    def start(self) -> None:
        self._t0 = (time.perf_counter(), time.process_time())
        self._start = [self._read(d) for d in self.domains]

    def stop(self) -> EnergyReading:
        total_uj = 0
        for domain, begin in zip(self.domains, self._start, strict=True):
            end = self._read(domain)
            if end < begin:  # the counter wrapped
                end += int((domain / "max_energy_range_uj").read_text())
            total_uj += end - begin
        wall = time.perf_counter() - self._t0[0]
        cpu = time.process_time() - self._t0[1]
        return EnergyReading(total_uj * 1e-6, wall, cpu, self.method)


def make_meter(device: str | Path = DEFAULT_DEVICE,
               prefer_rapl: bool = True) -> RaplMeter | PowerModelMeter:
    """RAPL when readable (and preferred), else the named device power model."""
    if prefer_rapl:
        rapl = RaplMeter()
        if rapl.available():
            return rapl
    return PowerModelMeter(load_device(device))


def describe_machine() -> str:
    """CPU model and logical CPU count, for profile tables and benchmark reports."""
    import os
    import platform

    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"
