//! The web console at `/ui/`, in a real headless Chromium over WebDriver, against a real `berth serve` whose
//! local agent runs Docker: an operator logs in, deploys an app from the editor and watches it reach running,
//! reads its output live, scales it, hot-swaps the allocator and rolls it back, and sees a framework's share
//! change after `berth framework weight`. Every page is also drawn at a phone's width. Screenshots of each
//! page are saved under `<target>/console-screenshots/`.

use std::sync::OnceLock;
use std::time::Duration;

use berth_tests::browser::Browser;
use berth_tests::cluster::{Master, eventually};
use berth_tests::docker;
use fantoccini::Locator;
use serde_json::json;

/// An image whose command prints a numbered line five times a second.
fn ticker() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    const TAG: &str = "berth-test/ticker:latest";
    const SCRIPT: &str = "#!/bin/sh\ni=0\nwhile true; do echo \"tick $i\"; i=$((i+1)); sleep 0.2; done\n";
    BUILT.get_or_init(|| docker::build_image(TAG, &[("/bin/ticker", SCRIPT)]));
    TAG
}

/// The highest `tick N` in `text`.
fn last_tick(text: &str) -> Option<u64> {
    text.lines().filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok()).max()
}

/// A percentage as the console prints it (`12.5%`), as a fraction.
fn percent(text: &str) -> Option<f64> {
    Some(text.trim().strip_suffix('%')?.parse::<f64>().ok()? / 100.0)
}

const MINUTE: Duration = Duration::from_secs(60);

/// Waits for the console to say how the change `what` went, and fails with its words unless it was done.
async fn done(b: &Browser, what: &str) {
    let notice = b
        .wait(&format!("the console's word on {what}"), MINUTE, move || async move {
            b.text("#notice").await.filter(|t| t.contains(what))
        })
        .await;
    assert!(notice.contains(&format!("{what}: done")), "{notice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_deploys_follows_scales_swaps_and_watches_shares_from_the_console() {
    docker::require();
    let image = ticker();
    let master = Master::start(&[]);
    let b = Browser::start(1280, 800).await;
    let b = &b;
    let ui = format!("{}/ui/", master.url);

    // Reads are open by default: the overview shows the cluster, and every change is disabled.
    b.client.goto(&ui).await.unwrap();
    b.wait("the overview's frameworks", MINUTE, move || async move {
        b.text("#frameworks-table").await.filter(|t| t.contains("marathon"))
    })
    .await;
    let set_weight =
        b.client.find(Locator::Css("tr[data-framework=marathon] button.set-weight")).await.unwrap();
    assert!(!set_weight.is_enabled().await.unwrap(), "read-only until the operator logs in");
    b.screenshot("overview-read-only").await;

    // A wrong token is refused and says so; the right one is kept for the session (a reload keeps it).
    b.type_into("#token", "not-the-token").await;
    b.click("#login").await;
    b.wait("the refusal", MINUTE, move || async move {
        b.text("#notice").await.filter(|t| t.contains("not the operator token"))
    })
    .await;
    assert_eq!(b.text("#whoami").await.as_deref(), Some("read-only"));
    b.type_into("#token", &master.token()).await;
    b.click("#login").await;
    b.wait("the login", MINUTE, move || async move { b.text("#whoami").await.filter(|t| t == "operator") })
        .await;
    b.client.refresh().await.unwrap();
    b.wait("the login to outlive a reload", MINUTE, move || async move {
        b.text("#whoami").await.filter(|t| t == "operator")
    })
    .await;

    // Deploy an app from the editor and watch it reach running.
    b.client.goto(&format!("{ui}#/apps")).await.unwrap();
    let app = json!({
        "id": "/ticker", "cpus": 0.1, "mem": 32, "instances": 1, "cmd": "ticker",
        "container": {"type": "DOCKER", "docker": {"image": image}},
    });
    b.type_into("#app-json", &app.to_string()).await;
    b.click("#deploy").await;
    done(b, "deployment of /ticker").await;
    b.wait("the app to run", Duration::from_secs(120), move || async move {
        b.text("#app-running").await.filter(|t| t == "1")
    })
    .await;
    b.screenshot("app").await;
    b.client.goto(&format!("{ui}#/apps")).await.unwrap();
    b.wait("the app in the list", MINUTE, move || async move {
        b.text("tr[data-app='/ticker'] td.running").await.filter(|t| t == "1")
    })
    .await;
    b.screenshot("apps").await;

    // Its output, live: the lines keep coming while the page stays open.
    b.client.goto(&format!("{ui}#/apps/ticker")).await.unwrap();
    b.click("#app-tasks-table tr[data-task] button.logs").await;
    let first =
        b.wait("the task's output", MINUTE, move || async move { last_tick(&b.text("#logs").await?) }).await;
    b.wait("more output, followed", MINUTE, move || async move {
        last_tick(&b.text("#logs").await?).filter(|n| *n >= first + 10)
    })
    .await;
    assert_eq!(b.text("#logs-state").await.as_deref(), Some("following…"));

    // Its resource use, sampled by the agent from the engine, next to its limits.
    b.wait("the task's memory use next to its limit", MINUTE, move || async move {
        b.text("#tasks-table tr[data-task] td.usage-mem").await.filter(|t| t.ends_with("/ 32 MiB"))
    })
    .await;
    b.screenshot("tasks-logs").await;

    // Scale it.
    b.client.goto(&format!("{ui}#/apps/ticker")).await.unwrap();
    b.wait("the scale input", MINUTE, move || async move {
        let value = b.client.find(Locator::Id("scale")).await.ok()?.prop("value").await.ok()??;
        (value == "1").then_some(())
    })
    .await;
    // The deployment that started it ends once the task has stayed up for its minimum healthy time; a
    // change before then is refused with Marathon's 409, which the console offers to force.
    eventually("the first deployment to end", MINUTE, || {
        master.get("/v2/deployments").as_array().unwrap().is_empty().then_some(())
    });
    b.type_into("#scale", "2").await;
    b.click("#scale-apply").await;
    done(b, "scale of /ticker").await;
    b.wait("two tasks running", Duration::from_secs(120), move || async move {
        b.text("#app-running").await.filter(|t| t == "2")
    })
    .await;

    // Hot-swap the allocator (a new version of the one in use, uploaded from a file) and roll it back.
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("proportional.wasm");
    std::fs::write(&component, berth_host::bundled::PROPORTIONAL).unwrap();
    b.client.goto(&format!("{ui}#/plugins")).await.unwrap();
    b.wait("the allocator in use", MINUTE, move || async move {
        b.text("#allocator-in-use").await.filter(|t| t == "proportional v1")
    })
    .await;
    b.client
        .find(Locator::Id("plugin-file"))
        .await
        .unwrap()
        .send_keys(component.to_str().unwrap())
        .await
        .unwrap();
    b.type_into("#plugin-name", "proportional").await;
    b.click("#upload").await;
    b.click("#confirm-yes").await;
    done(b, "upload of proportional").await;
    b.wait("the swap", MINUTE, move || async move {
        b.text("#allocator-in-use").await.filter(|t| t == "proportional v2")
    })
    .await;
    let plugins = master.get("/v1/plugins");
    let proportional = plugins.as_array().unwrap().iter().find(|p| p["name"] == "proportional").unwrap();
    assert_eq!(proportional["active_version"], 2, "{proportional}");
    b.screenshot("plugins-swapped").await;
    b.click("section[data-plugin=proportional] button.rollback").await;
    b.click("#confirm-yes").await;
    done(b, "rollback of proportional").await;
    b.wait("the rollback", MINUTE, move || async move {
        b.text("#allocator-in-use").await.filter(|t| t == "proportional v1")
    })
    .await;
    b.screenshot("plugins").await;

    // A framework's share follows its weight: `berth framework weight` divides it, and the chart shows it.
    b.client.goto(&format!("{ui}#/overview")).await.unwrap();
    let before = b
        .wait("marathon's share", MINUTE, move || async move {
            percent(&b.text("tr[data-framework=marathon] td.share").await?).filter(|s| *s > 0.0)
        })
        .await;
    master.ok(&["framework", "weight", "marathon", "4"]);
    let after = b
        .wait("the share to follow the weight", MINUTE, move || async move {
            let weight = b.text("tr[data-framework=marathon] td.weight").await?;
            let share = percent(&b.text("tr[data-framework=marathon] td.share").await?)?;
            (weight == "4" && share < before / 2.0).then_some(share)
        })
        .await;
    assert!((after - before / 4.0).abs() <= 0.002, "a quarter of {before}: {after}");
    b.client
        .find(Locator::Css("#shares polyline[data-series=marathon]"))
        .await
        .expect("marathon's line in the chart");
    b.screenshot("overview").await;

    // At a phone's width every page fits, with only its tables scrolling sideways.
    b.resize(390, 844).await;
    for (page, ready) in [
        ("overview", "#frameworks-table"),
        ("apps", "#apps-table"),
        ("apps/ticker", "#app-tasks-table"),
        ("tasks", "#tasks-table"),
        ("plugins", "section[data-plugin=proportional]"),
    ] {
        b.client.goto(&format!("{ui}#/{page}")).await.unwrap();
        b.wait(&format!("{page} at a phone's width"), MINUTE, move || async move {
            b.client.find(Locator::Css(ready)).await.ok()
        })
        .await;
        assert!(b.fits_width().await, "{page} is wider than a phone's screen");
        b.screenshot(&format!("phone-{}", page.replace('/', "-"))).await;
    }
    b.resize(1280, 800).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_protected_reads_the_console_asks_for_the_token_and_shows_nothing_before() {
    let master = Master::start(&["--no-local-agent", "--protect-reads"]);
    let b = Browser::start(1280, 800).await;
    let b = &b;
    b.client.goto(&format!("{}/ui/", master.url)).await.unwrap();
    b.wait("the request for the token", MINUTE, move || async move {
        b.text("#page").await.filter(|t| t.contains("reads are protected"))
    })
    .await;
    assert!(b.client.find(Locator::Css("#frameworks-table")).await.is_err(), "no data before the token");
    b.type_into("#token", &master.token()).await;
    b.click("#login").await;
    b.wait("the overview", MINUTE, move || async move {
        b.text("#frameworks-table").await.filter(|t| t.contains("marathon"))
    })
    .await;
}
