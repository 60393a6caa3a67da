"""Draining hosts: many migrations at once over shared links, within a stack's limits.

``drain(load_fleet("fleet.yaml"))`` predicts every VM's migration in one
SimPy run (:mod:`.engine`); :mod:`.links` shares the NICs max-min fairly,
:mod:`.concurrency` holds Nova's, KubeVirt's and oVirt's knobs,
:mod:`.placement` picks destinations, :mod:`.optimize` searches orders and
limits, :mod:`.execute` runs a drain for real on the testbed.
"""
from .concurrency import Concurrency, parse_concurrency
from .engine import drain
from .result import DrainResult, VMRecord
from .spec import Fleet, HostSpec, VMSpec, fleet_from_dict, load_fleet

__all__ = ["drain", "load_fleet", "fleet_from_dict", "Fleet", "HostSpec", "VMSpec", "Concurrency",
           "parse_concurrency", "DrainResult", "VMRecord"]
