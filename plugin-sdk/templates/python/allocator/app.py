"""{{name}}: a berth allocator in Python. It gives each framework with demand its tasks on the first node where
they fit, frameworks in order of id; change `allocate` to make it your policy.

componentize-py may create the WitWorld object for each call: keep state at module level.
"""

import wit_world
from wit_world.imports import allocation, host, types


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        pass

    def allocate(self, view: allocation.ClusterView) -> list:
        free = [[n.available.milli_cpus, n.available.mem_mib, n.available.disk_mib, n.available.gpus] for n in view.nodes]
        grants = {}
        for fw in view.frameworks:
            if fw.suppressed:
                continue
            for shape in fw.demand:
                need = [shape.milli_cpus, shape.mem_mib, shape.disk_mib, shape.gpus]
                if shape.ports:
                    continue  # this template does not hand out ports
                for _ in range(shape.count):
                    i = next((i for i, f in enumerate(free) if all(a >= b for a, b in zip(f, need))), None)
                    if i is None:
                        break
                    free[i] = [a - b for a, b in zip(free[i], need)]
                    key = (fw.id, view.nodes[i].id)
                    if key not in grants:
                        grants[key] = types.Resources(milli_cpus=0, mem_mib=0, disk_mib=0, gpus=0, ports=[])
                    r = grants[key]
                    r.milli_cpus, r.mem_mib, r.disk_mib, r.gpus = (
                        r.milli_cpus + need[0], r.mem_mib + need[1], r.disk_mib + need[2], r.gpus + need[3])
        host.log(host.Level.DEBUG, f"{{name}}: {len(grants)} grants")
        return [allocation.Grant(framework=f, node=n, resources=r) for (f, n), r in sorted(grants.items())]
