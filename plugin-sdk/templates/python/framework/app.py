"""{{name}}: a berth framework in Python. It keeps `instances` copies of a command running and replaces those
that end. Its task ids live in the framework's store, so a trap, a hot swap or a restart loses nothing.

Configuration (JSON): {"instances": 2, "image": "busybox:latest", "command": "sleep 3600",
"milli_cpus": 100, "mem_mib": 32}

componentize-py may create the WitWorld object for each call: keep state at module level.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, scheduling, store, types

CONFIG = {"instances": 2, "image": "busybox:latest", "command": "sleep 3600", "milli_cpus": 100, "mem_mib": 32}
ACTIVE: list = []
SEQ = [0]
# After a task fails, no replacement before this instant (no hot loop when, say, the image is missing).
RETRY_AFTER_MS = [0]


def save() -> None:
    store.put("active", json.dumps(ACTIVE).encode())


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        try:
            given = json.loads(config) if config.strip() else {}
        except ValueError as e:
            raise Err(f"invalid configuration: {e}")
        unknown = set(given) - set(CONFIG)
        if unknown:
            raise Err(f"unknown configuration keys: {sorted(unknown)}")
        CONFIG.update(given)
        stored = store.get("active")
        ACTIVE[:] = json.loads(stored) if stored else []

    def demand(self) -> list:
        if host.now_ms() < RETRY_AFTER_MS[0]:
            return []
        wanted = CONFIG["instances"] - len(ACTIVE)
        if wanted <= 0:
            return []
        return [types.TaskShape(milli_cpus=CONFIG["milli_cpus"], mem_mib=CONFIG["mem_mib"], disk_mib=0, gpus=0,
                                ports=0, count=wanted)]

    def offers(self, offers: list) -> list:
        decisions = []
        waiting = host.now_ms() < RETRY_AFTER_MS[0]
        for offer in offers:
            if waiting:
                decisions.append(scheduling.Decision_Decline(scheduling.Decline(offer=offer.id, refuse_seconds=1)))
                continue
            cpus, mem = offer.resources.milli_cpus, offer.resources.mem_mib
            tasks = []
            while len(ACTIVE) < CONFIG["instances"] and cpus >= CONFIG["milli_cpus"] and mem >= CONFIG["mem_mib"]:
                cpus -= CONFIG["milli_cpus"]
                mem -= CONFIG["mem_mib"]
                SEQ[0] += 1
                task_id = f"{{name}}-{host.now_ms()}-{SEQ[0]}"
                ACTIVE.append(task_id)
                container = scheduling.ContainerSpec(
                    image=CONFIG["image"], force_pull=False, command=CONFIG["command"], args=[], entrypoint=None,
                    env=[], labels=[], port_mappings=[], network=scheduling.Network_Bridge(), volumes=[],
                    working_dir=None, user=None, privileged=False)
                resources = types.Resources(milli_cpus=CONFIG["milli_cpus"], mem_mib=CONFIG["mem_mib"], disk_mib=0,
                                            gpus=0, ports=[])
                tasks.append(scheduling.TaskSpec(id=task_id, name="{{name}}", resources=resources,
                                                 container=container, health_checks=[], kill_grace_period_ms=3000))
            if tasks:
                decisions.append(scheduling.Decision_Launch(scheduling.Launch(offer=offer.id, tasks=tasks)))
            else:
                decisions.append(scheduling.Decision_Decline(scheduling.Decline(offer=offer.id, refuse_seconds=30)))
        save()
        return decisions

    def status(self, updates: list) -> list:
        ended = False
        terminal = {scheduling.TaskState.FINISHED, scheduling.TaskState.FAILED, scheduling.TaskState.KILLED,
                    scheduling.TaskState.LOST, scheduling.TaskState.ERROR}
        for u in updates:
            if u.state in terminal and u.task_id in ACTIVE:
                host.log(host.Level.INFO, f"{{name}}: task {u.task_id} ended: {u.message}")
                ACTIVE.remove(u.task_id)
                ended = True
                if u.state not in (scheduling.TaskState.FINISHED, scheduling.TaskState.KILLED):
                    RETRY_AFTER_MS[0] = host.now_ms() + 1000
        save()
        # Reviving clears the decline filters, so replacements can go anywhere at once.
        return [scheduling.Action_Revive()] if ended else []

    def tick(self, now_ms: int) -> list:
        return []

    def handle(self, request: scheduling.HttpRequest) -> scheduling.ApiReply:
        body = json.dumps({"instances": CONFIG["instances"], "active": ACTIVE}).encode()
        response = scheduling.HttpResponse(
            status=200, headers=[scheduling.KeyValue(key="content-type", value="application/json")], body=body)
        return scheduling.ApiReply(response=response, actions=[])
