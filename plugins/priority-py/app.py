"""priority: a berth allocator in Python.

Roles are served in strict priority order: the frameworks of a role get everything they demand (as far as it
fits) before any framework of a lower role gets anything. Within a role, weighted dominant-resource fairness
with progressive filling, as berth's default allocator does: one task at a time to the framework with the
lowest weighted dominant share, on the first node where it fits and the framework has not declined.

Configuration (JSON): {"roles": ["prod", "staging", "batch"]}. Roles not listed come after the listed ones,
all at the same, lowest priority.

Built into a WebAssembly component by componentize-py (see build.sh).
"""

import heapq
import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import allocation, host, types

# componentize-py may create the WitWorld object per call: keep configuration at module level.
ROLES: list = []


def log(message: str) -> None:
    host.log(host.Level.DEBUG, message)


def scalars(r) -> tuple:
    return (r.milli_cpus, r.mem_mib, r.disk_mib, r.gpus)


def port_count(ranges) -> int:
    return sum(r.end - r.begin + 1 for r in ranges)


def take_ports(ranges: list, n: int) -> list:
    """Removes the n lowest ports from `ranges` (a list of [begin, end]) and returns them as ranges."""
    taken = []
    while n > 0 and ranges:
        begin, end = ranges[0]
        size = end - begin + 1
        if size <= n:
            taken.append(types.PortRange(begin=begin, end=end))
            ranges.pop(0)
            n -= size
        else:
            taken.append(types.PortRange(begin=begin, end=begin + n - 1))
            ranges[0] = [begin + n, end]
            n = 0
    return taken


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        global ROLES
        try:
            parsed = json.loads(config) if config.strip() else {}
        except ValueError as e:
            raise Err(f"invalid priority configuration: {e}")
        roles = parsed.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Err('"roles" must be a list of role names, highest priority first')
        ROLES = roles

    def allocate(self, view: allocation.ClusterView) -> list:
        totals = [0, 0, 0, 0]
        free = []
        for node in view.nodes:
            for i, q in enumerate(scalars(node.total)):
                totals[i] += q
            free.append([list(scalars(node.available)), [[p.begin, p.end] for p in node.available.ports]])
        filtered = {(f.framework, f.node) for f in view.filters if f.expires_ms > view.now_ms}

        def share(allocated: list, weight: float) -> float:
            return max((a / t if t else 0.0) for a, t in zip(allocated, totals)) / weight

        grants = {}
        rank = {role: i for i, role in enumerate(ROLES)}
        frameworks = [f for f in view.frameworks if not f.suppressed and f.weight > 0 and f.demand]
        for level in sorted({rank.get(f.role, len(ROLES)) for f in frameworks}):
            group = [f for f in frameworks if rank.get(f.role, len(ROLES)) == level]
            allocated = {f.id: list(scalars(f.allocated)) for f in group}
            wants = {f.id: [[s, s.count] for s in f.demand if s.count > 0] for f in group}
            weight = {f.id: f.weight for f in group}
            queue = [(share(allocated[f.id], f.weight), f.id) for f in group if wants[f.id]]
            heapq.heapify(queue)
            while queue:
                _, fid = heapq.heappop(queue)
                shape, left = wants[fid][0]
                need = (shape.milli_cpus, shape.mem_mib, shape.disk_mib, shape.gpus)
                for position, node in enumerate(view.nodes):
                    quantities, ports = free[position]
                    if (fid, node.id) in filtered:
                        continue
                    if all(q >= n for q, n in zip(quantities, need)) and port_count(
                        [types.PortRange(begin=b, end=e) for b, e in ports]
                    ) >= shape.ports:
                        for i, n in enumerate(need):
                            quantities[i] -= n
                            allocated[fid][i] += n
                        key = (fid, node.id)
                        if key not in grants:
                            grants[key] = allocation.Grant(
                                framework=fid,
                                node=node.id,
                                resources=types.Resources(milli_cpus=0, mem_mib=0, disk_mib=0, gpus=0, ports=[]),
                            )
                        r = grants[key].resources
                        r.milli_cpus += need[0]
                        r.mem_mib += need[1]
                        r.disk_mib += need[2]
                        r.gpus += need[3]
                        r.ports.extend(take_ports(ports, shape.ports))
                        wants[fid][0][1] = left - 1
                        break
                else:
                    # Fits nowhere: this shape is done for this cycle.
                    wants[fid][0][1] = 0
                if wants[fid][0][1] == 0:
                    wants[fid].pop(0)
                if wants[fid]:
                    heapq.heappush(queue, (share(allocated[fid], weight[fid]), fid))
        log(f"priority: {len(grants)} grants")
        return [grants[k] for k in sorted(grants)]
