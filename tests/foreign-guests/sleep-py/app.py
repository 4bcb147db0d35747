"""Test guest: an allocator in Python whose `allocate` sleeps for 60 s (`time.sleep`, a WASI clock and a
poll underneath). The host must stop it at its deadline and keep serving meanwhile."""

import time

import wit_world
from wit_world.imports import allocation


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        pass

    def allocate(self, view: allocation.ClusterView) -> list:
        time.sleep(60)
        return []
