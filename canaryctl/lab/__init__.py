"""The lab: simulated LLM providers with latency, error, quality and price profiles, a traffic
generator, and LabStack to run them behind a gateway; used by `demo`, tests and benchmarks."""

from canaryctl.lab.provider import SimulatedProvider
from canaryctl.lab.stack import LabStack
from canaryctl.lab.traffic import TrafficGenerator, TrafficSnapshot, TrafficStats

__all__ = ["LabStack", "SimulatedProvider", "TrafficGenerator", "TrafficSnapshot", "TrafficStats"]
