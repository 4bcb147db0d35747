"""Drives berth's Marathon API with the `marathon` client library from PyPI, unchanged.

Usage: python3 marathon_client.py URL TOKEN IMAGE

Creates an app, lists apps, scales to 3, lists tasks, kills a task and waits for its replacement, deletes the
app, and follows it all on the client's event stream (`/v2/events`). Exits non-zero (with the failed assertion)
if anything is not as Marathon would have it.
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
from marathon.models import MarathonApp  # noqa: E402
from marathon.models.container import MarathonContainer, MarathonDockerContainer  # noqa: E402


def wait(what, predicate, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def follow_events(client, seen):
    """Appends each event of the client's event stream to `seen` (a daemon thread, for the whole script)."""
    for event in client.event_stream(event_types=["status_update_event", "deployment_success"]):
        seen.append(event)


def main(url, token, image):
    client = MarathonClient(url, auth_token=token)
    assert client.ping().strip() in (b"pong", "pong"), "ping"
    events = []
    threading.Thread(target=follow_events, args=(client, events), daemon=True).start()
    # Events published before the stream is attached are not delivered (as in Marathon): wait for it.
    wait("the event stream to attach", lambda: any(e.event_type == "event_stream_attached" for e in events))
    info = client.get_info()
    assert info.name == "marathon", info

    app = MarathonApp(
        cmd="sleep 3600",
        cpus=0.1,
        mem=32,
        instances=1,
        container=MarathonContainer(docker=MarathonDockerContainer(image=image, network="BRIDGE")),
    )
    created = client.create_app("py-app", app)
    assert created.id == "/py-app", created
    assert [a.id for a in client.list_apps()] == ["/py-app"]

    def running(n):
        tasks = [t for t in client.list_tasks("py-app") if t.state == "TASK_RUNNING"]
        return tasks if len(tasks) == n else None

    first = wait("1 running task", lambda: running(1))
    wait(
        "the status_update_event of its TASK_RUNNING",
        lambda: any(
            e.event_type == "status_update_event"
            and e.task_status == "TASK_RUNNING"
            and e.app_id == "/py-app"
            and e.task_id == first[0].id
            for e in events
        ),
    )
    wait("a deployment_success", lambda: any(e.event_type == "deployment_success" for e in events))
    client.scale_app("py-app", instances=3, force=True)
    tasks = wait("3 running tasks", lambda: running(3))
    assert all(t.app_id == "/py-app" for t in tasks), tasks
    assert {t.id for t in client.list_tasks()} >= {t.id for t in tasks}, "GET /v2/tasks lists them too"
    assert client.get_app("py-app").instances == 3

    victim = tasks[0].id
    client.kill_task("py-app", victim)
    replaced = wait(
        "the killed task to be replaced",
        lambda: (lambda ts: ts if ts and victim not in {t.id for t in ts} else None)(running(3)),
    )
    assert len(replaced) == 3 and client.get_app("py-app").instances == 3

    client.delete_app("py-app", force=True)
    wait("the app to be gone", lambda: client.list_apps() == [])
    wait("its tasks to be gone", lambda: client.list_tasks() == [])
    print("ok: create, list, scale, list tasks, kill and replace, delete, event stream")


if __name__ == "__main__":
    main(*sys.argv[1:4])
