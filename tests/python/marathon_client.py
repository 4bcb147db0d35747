"""Drives berth's Marathon API with the `marathon` client library from PyPI, unchanged: every method of
`MarathonClient` but pods and event subscriptions (both removed in Marathon 1.5), with the client's own
models parsing every answer and every event on the stream.

Usage: python3 marathon_client.py URL TOKEN IMAGE

Exits non-zero (with the failed assertion) if anything is not as Marathon would have it; prints one `ok:`
line per part that passed and, at the end, the event types the stream carried.
"""

import collections
import collections.abc
import sys
import threading
import time

# marathon 0.13.0 (its latest release) serializes nested objects with `collections.Iterable`, an alias Python
# removed in 3.10. Restoring the standard library's alias, not changing the library, lets it run on the
# Python this machine has; on Python 3.9 this line does nothing.
collections.Iterable = getattr(collections, "Iterable", collections.abc.Iterable)

from marathon import MarathonClient  # noqa: E402
from marathon.exceptions import MarathonHttpError  # noqa: E402
from marathon.models import MarathonApp, MarathonGroup, MarathonHealthCheck  # noqa: E402
from marathon.models.container import (  # noqa: E402
    MarathonContainer,
    MarathonContainerPortMapping,
    MarathonDockerContainer,
)


def wait(what, predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Stream:
    """Every event of the client's event stream, parsed by the client's models (a daemon thread). An event
    the models cannot parse ends the thread with the error, which `check` reports."""

    def __init__(self, client):
        self.events = []
        self.error = None
        threading.Thread(target=self._follow, args=(client,), daemon=True).start()

    def _follow(self, client):
        try:
            for event in client.event_stream():
                self.events.append(event)
        except Exception as e:  # noqa: BLE001 - any failure to parse is the finding
            self.error = repr(e)

    def check(self):
        assert self.error is None, f"the client could not read an event: {self.error}"

    def types(self):
        return {e.event_type for e in self.events}


def app(image, cmd="sleep 3600", instances=1, ports=0, **kwargs):
    mappings = [MarathonContainerPortMapping(container_port=8000 + i, host_port=0, service_port=0, protocol="tcp")
                for i in range(ports)]
    docker = MarathonDockerContainer(image=image, network="BRIDGE", port_mappings=mappings or None)
    return MarathonApp(cmd=cmd, cpus=0.05, mem=16, instances=instances, container=MarathonContainer(docker=docker),
                       **kwargs)


def idle(client):
    """Waits for every deployment to end."""
    wait("no deployment", lambda: client.list_deployments() == [])


def running(client, app_id, n):
    tasks = [t for t in client.list_tasks(app_id) if t.state == "TASK_RUNNING"]
    return tasks if len(tasks) == n else None


def main(url, token, image):
    client = MarathonClient(url, auth_token=token)
    stream = Stream(client)
    wait("the event stream to attach", lambda: "event_stream_attached" in stream.types())

    # The server.
    assert client.ping().strip() in (b"pong", "pong"), "ping"
    info = client.get_info()
    assert info.name == "marathon" and info.elected, info
    leader = client.get_leader()
    leader = leader["leader"] if isinstance(leader, dict) else leader
    assert ":" in leader, f"the leader is host:port, got {leader}"
    metrics = client.get_metrics()
    assert "service.mesosphere.marathon.app.count" in metrics["gauges"], metrics
    try:
        client.delete_leader()
        raise AssertionError("abdication is refused")
    except MarathonHttpError as e:
        assert "not supported" in str(e), e
    print("ok: ping, get_info, get_leader, get_metrics, delete_leader (refused)")

    # An app, its versions, a rollback.
    created = client.create_app(
        "py-app",
        app(image, labels={"team": "web"}, ports=1),
    )
    assert created.id == "/py-app", created
    wait("1 running task", lambda: running(client, "py-app", 1))
    idle(client)
    assert [a.id for a in client.list_apps(label="team==web")] == ["/py-app"]
    assert client.list_apps(label="team!=web") == []
    first_version = client.get_app("py-app").version
    client.update_app("py-app", app(image, env={"COLOUR": "blue"}, labels={"team": "web"}, ports=1), force=True)
    idle(client)
    assert client.get_app("py-app").env == {"COLOUR": "blue"}
    versions = client.list_versions("py-app")
    assert first_version in versions and len(versions) >= 2, versions
    assert client.get_version("py-app", first_version).env in ({}, None)
    client.rollback_app("py-app", first_version, force=True)
    wait("the rollback to take", lambda: client.get_app("py-app").env in ({}, None))
    idle(client)
    print("ok: create_app, list_apps (label selectors), update_app, list_versions, get_version, rollback_app")

    # Scaling, tasks, endpoints, kills.
    client.scale_app("py-app", instances=3, force=True)
    tasks = wait("3 running tasks", lambda: running(client, "py-app", 3))
    client.scale_app("py-app", delta=-1, force=True)
    wait("2 running tasks", lambda: running(client, "py-app", 2))
    idle(client)
    endpoints = client.list_endpoints()
    assert endpoints and all(e.service_port >= 10000 for e in endpoints), endpoints
    assert {t.id for t in client.list_tasks()} >= {t.id for t in running(client, "py-app", 2)}
    victim = running(client, "py-app", 2)[0].id
    client.kill_task("py-app", victim)
    wait("the killed task to be replaced", lambda: (lambda ts: ts and victim not in {t.id for t in ts})(running(client, "py-app", 2)))
    idle(client)
    ids = [t.id for t in running(client, "py-app", 2)]
    client.kill_given_tasks([ids[0]], scale=True)
    wait("scaled down to 1", lambda: client.get_app("py-app").instances == 1 and running(client, "py-app", 1))
    idle(client)
    client.kill_tasks("py-app", scale=False)
    wait("the killed tasks to be replaced", lambda: running(client, "py-app", 1))
    idle(client)
    client.restart_app("py-app", force=True)
    idle(client)
    print("ok: scale_app, list_tasks, list_endpoints, kill_task, kill_given_tasks, kill_tasks, restart_app")

    # Several apps in one update; the queue; a deployment rolled back.
    client.update_apps([app(image, instances=1, id="/py-a"), app(image, instances=1, id="/py-b")], force=True)
    wait("py-a and py-b to run", lambda: running(client, "py-a", 1) and running(client, "py-b", 1))
    idle(client)
    client.scale_app("py-b", instances=500, force=True)  # more than the node has: stays in the queue
    queue = wait("py-b in the queue", lambda: [q for q in client.list_queue(embed_last_unused_offers=True) if q.app.id == "/py-b"])
    assert queue[0].count > 0 and queue[0].processed_offers_summary is not None, queue
    client.reset_delay("py-b")
    stuck = client.list_deployments()
    assert len(stuck) == 1 and stuck[0].affected_apps == ["/py-b"], stuck
    client.delete_deployment(stuck[0].id)
    wait("py-b back at 1 instance", lambda: client.get_app("py-b").instances == 1)
    idle(client)
    print("ok: update_apps, list_queue, reset_delay, list_deployments, delete_deployment")

    # Groups.
    group = MarathonGroup(id="/py-group", apps=[app(image, id="/py-group/web")])
    client.create_group(group)
    wait("the group's app to run", lambda: running(client, "/py-group/web", 1))
    idle(client)
    assert "/py-group" in [g.id for g in client.list_groups()], client.list_groups()
    fetched = client.get_group("py-group")
    assert [a.id for a in fetched.apps] == ["/py-group/web"], fetched
    group_version = fetched.version
    client.scale_group("py-group", scale_by=2)
    wait("the group scaled", lambda: running(client, "/py-group/web", 2))
    idle(client)
    client.update_group("py-group", MarathonGroup(id="/py-group", apps=[app(image, id="/py-group/web", instances=3)]), force=True)
    wait("the group updated", lambda: running(client, "/py-group/web", 3))
    idle(client)
    client.rollback_group("py-group", group_version, force=True)
    wait("the group rolled back", lambda: client.get_app("/py-group/web").instances == 1)
    idle(client)
    client.delete_group("py-group", force=True)
    wait("the group gone", lambda: "/py-group" not in [g.id for g in client.list_groups()])
    print("ok: create_group, list_groups, get_group, scale_group, update_group, rollback_group, delete_group")

    # A health check that fails: the task is killed, and the events say so.
    checked = app(
        image,
        health_checks=[MarathonHealthCheck(protocol="COMMAND", command="exit 1", grace_period_seconds=0,
                                           interval_seconds=1, timeout_seconds=1, max_consecutive_failures=1)],
    )
    client.create_app("py-unhealthy", checked)
    wait("a health check to fail", lambda: "unhealthy_task_kill_event" in stream.types())
    # Its deployment never ends (the task never stays healthy): deleting it needs `force`, as in Marathon.
    client.delete_app("py-unhealthy", force=True)
    for app_id in ["py-app", "py-a", "py-b"]:
        client.delete_app(app_id)
    wait("the apps to be gone", lambda: client.list_apps() == [])
    wait("their tasks to be gone", lambda: client.list_tasks() == [])
    print("ok: delete_app, health check failures")

    stream.check()
    expected = {
        "event_stream_attached", "api_post_event", "status_update_event", "instance_changed_event",
        "deployment_info", "deployment_step_success", "deployment_success", "deployment_step_failure",
        "deployment_failed", "group_change_success", "app_terminated_event", "health_status_changed_event",
        "failed_health_check_event", "unhealthy_task_kill_event",
    }
    missing = expected - stream.types()
    assert not missing, f"events never seen: {missing}"
    print("ok: event_stream read every event, of types", ", ".join(sorted(stream.types())))


if __name__ == "__main__":
    main(*sys.argv[1:4])
