//! The API as a client sees it: requests in, status codes and JSON out.

use super::*;
use crate::model::State;
use crate::model::testing::MemoryStoreForTests;
use crate::scheduler::Config;

fn call(m: &mut Marathon, method: &str, path: &str, body: Value) -> (u16, Value) {
    let request = HttpRequest {
        method: method.into(),
        path: path.split('?').next().unwrap().into(),
        query: path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default(),
        headers: vec![],
        body: if body.is_null() { vec![] } else { body.to_string().into_bytes() },
    };
    let reply = m.handle(request, &MemoryStoreForTests::default());
    (reply.response.status, serde_json::from_slice(&reply.response.body).unwrap_or(Value::Null))
}

/// A call with a store that keeps what each call flushes (stored versions), as the plugin's host does.
fn call_with(
    m: &mut Marathon,
    store: &mut MemoryStoreForTests,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let request = HttpRequest {
        method: method.into(),
        path: path.split('?').next().unwrap().into(),
        query: path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default(),
        headers: vec![],
        body: if body.is_null() { vec![] } else { body.to_string().into_bytes() },
    };
    let reply = m.handle(request, store);
    m.state.flush(store).unwrap();
    (reply.response.status, serde_json::from_slice(&reply.response.body).unwrap_or(Value::Null))
}

#[test]
fn create_conflict_scale_and_lock() {
    let mut m = Marathon::new(State::default(), Config::default(), 1_000);
    let app = json!({"id": "web", "instances": 1, "container": {"docker": {"image": "x:1"}}});
    let (status, body) = call(&mut m, "POST", "/v2/apps", app.clone());
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "/web");
    assert_eq!(body["deployments"].as_array().unwrap().len(), 1);
    let (status, body) = call(&mut m, "POST", "/v2/apps", app);
    assert_eq!((status, body["message"].as_str().unwrap()), (409, "An app with id [/web] already exists."));
    let (status, body) = call(&mut m, "PUT", "/v2/apps/web", json!({"instances": 3}));
    assert_eq!(status, 409, "the start deployment is still running: {body}");
    let (status, body) = call(&mut m, "PUT", "/v2/apps/web?force=True", json!({"instances": 3}));
    assert_eq!(status, 200, "{body}");
    let (_, body) = call(&mut m, "GET", "/v2/apps/web", Value::Null);
    assert_eq!(body["app"]["instances"], 3);
    assert_eq!(m.demand()[0].count, 3);
    let (status, body) = call(&mut m, "POST", "/v2/apps", json!({"id": "bad", "cpus": 0}));
    assert_eq!(status, 422);
    assert_eq!(body["message"], "Object is not valid");
}

#[test]
fn query_strings_decode() {
    let p = Params(query("embed=apps.tasks&embed=apps.counts&force=True&id=%2Fshop"));
    assert_eq!(p.all("embed"), vec!["apps.tasks", "apps.counts"]);
    assert!(p.flag("force"));
    assert_eq!(p.get("id"), Some("/shop"));
    // A `%` at the end, or before the middle of a multi-byte character (found by fuzzing), stays a `%`.
    let p = Params(query("a=%2F%41&b=la\u{d4}i%\u{e1}s&c=50%"));
    assert_eq!(p.get("a"), Some("/A"));
    assert_eq!(p.get("b"), Some("la\u{d4}i%\u{e1}s"));
    assert_eq!(p.get("c"), Some("50%"));
}

#[test]
fn a_put_with_an_earlier_version_rolls_the_app_back_to_that_definition() {
    let mut m = Marathon::new(State::default(), Config::default(), 1_000);
    let mut store = MemoryStoreForTests::default();
    let app = json!({"id": "web", "cmd": "v1", "container": {"docker": {"image": "x:1"}}});
    assert_eq!(call_with(&mut m, &mut store, "POST", "/v2/apps", app).0, 201);
    let (_, v1) = call_with(&mut m, &mut store, "GET", "/v2/apps/web", Value::Null);
    let v1 = v1["app"]["version"].as_str().unwrap().to_string();
    m.now_ms += 1_000;
    let (status, _) = call_with(&mut m, &mut store, "PUT", "/v2/apps/web?force=true", json!({"cmd": "v2"}));
    assert_eq!(status, 200);
    m.now_ms += 1_000;
    let (status, body) =
        call_with(&mut m, &mut store, "PUT", "/v2/apps/web?force=true", json!({"version": v1}));
    assert_eq!(status, 200, "{body}");
    let (_, now) = call_with(&mut m, &mut store, "GET", "/v2/apps/web", Value::Null);
    assert_eq!(now["app"]["cmd"], "v1", "back at the first definition: {now}");
    assert_ne!(now["app"]["version"], v1, "as a new version");
    let (status, _) = call_with(
        &mut m,
        &mut store,
        "PUT",
        "/v2/apps/web?force=true",
        json!({"version": "1999-01-01T00:00:00.000Z"}),
    );
    assert_eq!(status, 404, "a version never stored");
}

#[test]
fn several_apps_in_one_put_are_one_deployment_and_one_bad_app_changes_nothing() {
    let mut m = Marathon::new(State::default(), Config::default(), 1_000);
    let apps = json!([
        {"id": "a", "container": {"docker": {"image": "x:1"}}},
        {"id": "b", "container": {"docker": {"image": "x:1"}}},
    ]);
    let (status, body) = call(&mut m, "PUT", "/v2/apps", apps);
    assert_eq!(status, 201, "{body}");
    assert_eq!(m.state.deployments.len(), 1, "one deployment for both");
    let d = m.state.deployments.values().next().unwrap();
    assert_eq!(d.apps().collect::<Vec<_>>(), vec!["/a", "/b"]);

    let bad = json!([
        {"id": "c", "container": {"docker": {"image": "x:1"}}},
        {"id": "d", "cpus": -1, "container": {"docker": {"image": "x:1"}}},
    ]);
    let (status, _) = call(&mut m, "PUT", "/v2/apps", bad);
    assert_eq!(status, 422);
    assert!(!m.state.apps.contains_key("/c"), "nothing applied");
}

#[test]
fn delete_is_forced_unless_told_otherwise_and_partial_update_false_replaces() {
    let mut m = Marathon::new(State::default(), Config::default(), 1_000);
    let app =
        json!({"id": "web", "instances": 2, "env": {"A": "1"}, "container": {"docker": {"image": "x:1"}}});
    assert_eq!(call(&mut m, "POST", "/v2/apps", app).0, 201);
    let (status, body) = call(
        &mut m,
        "PUT",
        "/v2/apps/web?force=true&partialUpdate=false",
        json!({"container": {"docker": {"image": "x:2"}}}),
    );
    assert_eq!(status, 200, "{body}");
    let (_, now) = call(&mut m, "GET", "/v2/apps/web", Value::Null);
    assert_eq!(
        (now["app"]["instances"].clone(), now["app"]["env"].clone()),
        (json!(1), json!({})),
        "replaced: {now}"
    );
    assert_eq!(
        call(&mut m, "DELETE", "/v2/apps/web?force=false", Value::Null).0,
        409,
        "locked by its deployment"
    );
    assert_eq!(
        call(&mut m, "DELETE", "/v2/apps/web", Value::Null).0,
        200,
        "forced by default, as in Marathon"
    );
}

#[test]
fn fields_berth_does_not_honour_are_refused_by_name() {
    let mut m = Marathon::new(State::default(), Config::default(), 1_000);
    for (field, value) in [
        ("dependencies", json!(["/db"])),
        ("acceptedResourceRoles", json!(["slave_public"])),
        ("unreachableStrategy", json!("disabled")),
        ("executor", json!("/opt/exec")),
        ("colour", json!("blue")),
    ] {
        let mut app = json!({"id": "web", "container": {"docker": {"image": "x:1"}}});
        app[field] = value;
        let (status, body) = call(&mut m, "POST", "/v2/apps", app);
        assert_eq!(status, 422, "{field}");
        assert_eq!(body["details"][0]["path"], format!("/{field}"), "{body}");
    }
    let app = json!({"id": "web", "container": {"docker": {"image": "x:1", "parameters": [{"key": "cap-add", "value": "ALL"}]}}});
    let (status, body) = call(&mut m, "POST", "/v2/apps", app);
    assert_eq!((status, body["details"][0]["path"].as_str()), (422, Some("/container/docker/parameters")));
    // Defaults clients send are fine.
    let app = json!({"id": "web", "dependencies": [], "acceptedResourceRoles": ["*"], "container": {"docker": {"image": "x:1"}}});
    assert_eq!(call(&mut m, "POST", "/v2/apps", app).0, 201);
}

#[test]
fn a_group_is_created_scaled_replaced_rolled_back_and_deleted_as_one_deployment_each() {
    let mut m = Marathon::new(State::default(), Config::default(), 1_000);
    let mut store = MemoryStoreForTests::default();
    let image = json!({"docker": {"image": "x:1"}});
    let group = json!({"id": "/shop", "apps": [{"id": "web", "container": image}],
                       "groups": [{"id": "back", "apps": [{"id": "/shop/back/db", "container": image}]}]});
    let (status, body) = call_with(&mut m, &mut store, "POST", "/v2/groups", group.clone());
    assert_eq!(status, 201, "{body}");
    assert_eq!(m.state.deployments.len(), 1, "one deployment for the group");
    assert!(m.state.apps.contains_key("/shop/web") && m.state.apps.contains_key("/shop/back/db"));
    assert_eq!(call_with(&mut m, &mut store, "POST", "/v2/groups", group).0, 409);
    let (_, tree) = call_with(&mut m, &mut store, "GET", "/v2/groups/shop", Value::Null);
    assert_eq!(tree["apps"][0]["id"], "/shop/web");
    assert_eq!(tree["groups"][0]["id"], "/shop/back");
    assert_eq!(tree["groups"][0]["apps"][0]["id"], "/shop/back/db");
    let (_, versions) = call_with(&mut m, &mut store, "GET", "/v2/groups/shop/versions", Value::Null);
    let first = versions[0].as_str().unwrap().to_string();

    m.now_ms += 1_000;
    let (status, body) =
        call_with(&mut m, &mut store, "PUT", "/v2/groups/shop?force=true", json!({"scaleBy": 3}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(m.state.apps["/shop/web"].app.instances, 3);

    // A dry run changes nothing.
    let (status, plan) = call_with(
        &mut m,
        &mut store,
        "PUT",
        "/v2/groups/shop?dryRun=true",
        json!({"apps": [{"id": "web", "container": image}]}),
    );
    assert_eq!(status, 200);
    assert_eq!(plan["steps"][1]["actions"][0], json!({"action": "StopApplication", "app": "/shop/back/db"}));
    assert!(!m.state.apps["/shop/back/db"].deleting);

    m.now_ms += 1_000;
    let (status, _) =
        call_with(&mut m, &mut store, "PUT", "/v2/groups/shop?force=true", json!({"version": first}));
    assert_eq!(status, 200);
    assert_eq!(m.state.apps["/shop/web"].app.instances, 1, "rolled back to one instance");

    let (status, body) =
        call_with(&mut m, &mut store, "POST", "/v2/groups", json!({"id": "/x", "dependencies": ["/shop"]}));
    assert_eq!((status, body["details"][0]["path"].as_str()), (422, Some("/x/dependencies")));

    let (status, _) = call_with(&mut m, &mut store, "DELETE", "/v2/groups/shop", Value::Null);
    assert_eq!(status, 200);
    assert!(m.state.apps.values().all(|a| a.deleting));
}
