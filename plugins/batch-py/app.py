"""batch: a berth framework in Python that runs jobs (shell commands in containers) to completion.

A job is posted to the framework's HTTP API; it runs as a task until it exits 0 (succeeded), and is run again
when it fails (non-zero exit, lost node, failed launch) until its retries are used up (failed). Every job lives
in the framework's store, so the framework carries on after a trap, a hot swap or a daemon restart.

API (mounted by berth at /frameworks/<name>/):
  POST /jobs        {"name": "report", "command": "make report", "retries": 2,
                     "image": "...", "cpus": 0.1, "mem": 32}      (image/cpus/mem default from the config)
  GET  /jobs        every job: state (pending, running, succeeded, failed), attempts, exit codes
  GET  /jobs/NAME   one job

Configuration (JSON): {"image": "busybox:latest", "cpus": 0.1, "mem": 32, "retries": 2}.

Built into a WebAssembly component by componentize-py (see build.sh).
"""

import json
import re

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, scheduling, store, types

# componentize-py may create the WitWorld object per call: keep state at module level.
CONFIG = {"image": "busybox:latest", "cpus": 0.1, "mem": 32, "retries": 2}
JOBS: dict = {}
SUPPRESSED = [False]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def log(message: str) -> None:
    host.log(host.Level.INFO, message)


def save(job: dict) -> None:
    store.put("job/" + job["name"], json.dumps(job).encode())


def reply(status: int, body, new_work: bool = False) -> scheduling.ApiReply:
    response = scheduling.HttpResponse(
        status=status,
        headers=[scheduling.KeyValue(key="content-type", value="application/json")],
        body=json.dumps(body).encode(),
    )
    return scheduling.ApiReply(response=response, actions=revive_or_suppress(new_work))


def pending() -> list:
    return [j for j in JOBS.values() if j["state"] == "pending"]


def revive_or_suppress(new_work: bool = False) -> list:
    """Offers only while some job waits to run. New work revives even when not suppressed: reviving also
    clears the decline filters this framework set while it had nothing to run."""
    waiting = bool(pending())
    if waiting and (SUPPRESSED[0] or new_work):
        SUPPRESSED[0] = False
        return [scheduling.Action_Revive()]
    if not waiting and not SUPPRESSED[0]:
        SUPPRESSED[0] = True
        return [scheduling.Action_Suppress()]
    return []


def milli(cpus) -> int:
    return max(1, int(round(float(cpus) * 1000)))


def task_spec(job: dict) -> scheduling.TaskSpec:
    container = scheduling.ContainerSpec(
        image=job["image"],
        force_pull=False,
        command=job["command"],
        args=[],
        entrypoint=None,
        env=[scheduling.KeyValue(key="BATCH_JOB", value=job["name"]),
             scheduling.KeyValue(key="BATCH_ATTEMPT", value=str(job["attempts"]))],
        labels=[],
        port_mappings=[],
        network=scheduling.Network_Bridge(),
        volumes=[],
        working_dir=None,
        user=None,
        privileged=False,
    )
    resources = types.Resources(milli_cpus=milli(job["cpus"]), mem_mib=int(job["mem"]), disk_mib=0, gpus=0, ports=[])
    return scheduling.TaskSpec(
        id=f"{job['name']}.{job['attempts']}",
        name=job["name"],
        resources=resources,
        container=container,
        health_checks=[],
        kill_grace_period_ms=3000,
    )


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        try:
            given = json.loads(config) if config.strip() else {}
        except ValueError as e:
            raise Err(f"invalid batch configuration: {e}")
        unknown = set(given) - set(CONFIG)
        if unknown:
            raise Err(f"unknown batch configuration keys: {sorted(unknown)}")
        CONFIG.update(given)
        JOBS.clear()
        for key in store.keys("job/"):
            job = json.loads(store.get(key))
            JOBS[job["name"]] = job
        SUPPRESSED[0] = False

    def demand(self) -> list:
        return [
            types.TaskShape(milli_cpus=milli(j["cpus"]), mem_mib=int(j["mem"]), disk_mib=0, gpus=0, ports=0, count=1)
            for j in pending()
        ]

    def offers(self, offers: list) -> list:
        decisions = []
        waiting = pending()
        for offer in offers:
            cpus, mem = offer.resources.milli_cpus, offer.resources.mem_mib
            tasks = []
            for job in list(waiting):
                need_cpus, need_mem = milli(job["cpus"]), int(job["mem"])
                if need_cpus <= cpus and need_mem <= mem:
                    cpus -= need_cpus
                    mem -= need_mem
                    job["attempts"] += 1
                    job["state"] = "running"
                    job["task"] = f"{job['name']}.{job['attempts']}"
                    save(job)
                    tasks.append(task_spec(job))
                    waiting.remove(job)
            if tasks:
                decisions.append(scheduling.Decision_Launch(scheduling.Launch(offer=offer.id, tasks=tasks)))
            else:
                decisions.append(scheduling.Decision_Decline(scheduling.Decline(offer=offer.id, refuse_seconds=30)))
        return decisions

    def status(self, updates: list) -> list:
        retried = False
        for u in updates:
            name = u.task_id.rsplit(".", 1)[0]
            job = JOBS.get(name)
            if job is None or job.get("task") != u.task_id:
                continue
            state = u.state
            if state == scheduling.TaskState.FINISHED:
                job["state"] = "succeeded"
                job["exit_codes"].append(0)
            elif state in (scheduling.TaskState.FAILED, scheduling.TaskState.LOST, scheduling.TaskState.ERROR,
                           scheduling.TaskState.KILLED):
                job["exit_codes"].append(u.exit_code)
                job["last_error"] = u.message
                if job["attempts"] <= job["retries"]:
                    job["state"] = "pending"
                    retried = True
                    log(f"batch: job {name} attempt {job['attempts']} failed ({u.message}); retrying")
                else:
                    job["state"] = "failed"
                    log(f"batch: job {name} failed after {job['attempts']} attempts")
            else:
                continue
            save(job)
        return revive_or_suppress(new_work=retried)

    def tick(self, now_ms: int) -> list:
        return revive_or_suppress()

    def handle(self, request: scheduling.HttpRequest) -> scheduling.ApiReply:
        path = request.path.rstrip("/")
        if request.method == "GET" and path == "/jobs":
            return reply(200, sorted(JOBS.values(), key=lambda j: j["name"]))
        if request.method == "GET" and path.startswith("/jobs/"):
            job = JOBS.get(path[len("/jobs/"):])
            return reply(200, job) if job else reply(404, {"message": "no such job"})
        if request.method == "POST" and path == "/jobs":
            try:
                body = json.loads(bytes(request.body) or b"{}")
            except ValueError as e:
                return reply(400, {"message": f"invalid JSON: {e}"})
            name = body.get("name", "")
            if not isinstance(name, str) or not NAME.match(name):
                return reply(422, {"message": "name must be 1-63 characters from A-Z, a-z, 0-9, '_', '.', '-'"})
            if not isinstance(body.get("command"), str) or not body["command"]:
                return reply(422, {"message": "command must be a non-empty string"})
            if name in JOBS:
                return reply(409, {"message": f"job {name} exists"})
            job = {
                "name": name,
                "command": body["command"],
                "image": body.get("image", CONFIG["image"]),
                "cpus": body.get("cpus", CONFIG["cpus"]),
                "mem": body.get("mem", CONFIG["mem"]),
                "retries": int(body.get("retries", CONFIG["retries"])),
                "attempts": 0,
                "state": "pending",
                "exit_codes": [],
            }
            JOBS[name] = job
            save(job)
            return reply(201, job, new_work=True)
        return reply(404, {"message": f"no such endpoint: {request.method} {request.path}"})
