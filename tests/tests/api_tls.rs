//! The API over TLS: the CLI, agents and HTTP/1.1 clients (Marathon's) verify the master against a CA;
//! agents may present client certificates, and must when the master requires them; a plain-HTTP client is
//! told to use HTTPS; a client that cannot verify the master does not get in.

use std::path::Path;
use std::time::Duration;

use berth_tests::cluster::{Agent, Master, eventually};
use berth_tests::pki::Pki;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn joined(master: &Master, name: &str) -> bool {
    master
        .get("/v1/nodes")
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["hostname"] == name && n["connected"] == true)
}

#[test]
fn the_api_over_tls_serves_the_cli_agents_and_http1_clients_that_verify_it() {
    let pki = Pki::new();
    let (cert, key, ca) = (pki.arg("server.pem"), pki.arg("server.key"), pki.arg("ca.pem"));
    let master = Master::start_tls(
        &["--no-local-agent", "--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca],
        &pki.path("ca.pem"),
        None,
    );
    assert!(master.url.starts_with("https://"));

    // gRPC (the CLI) and HTTP/1.1 (Marathon's API, as its clients speak it) on the one TLS port.
    let nodes = master.json(&["node", "ls"]);
    assert_eq!(nodes, serde_json::json!([]));
    // `berth app` speaks HTTP/1.1 to Marathon's API, verifying with $BERTH_CA (`ok` fails on an error).
    master.ok(&["app", "ls"]);
    let (status, body) = master.request("GET", "/v2/apps", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"apps":[]}"#);

    // A client that cannot verify the master: the CLI with the system's roots, or with the wrong CA.
    let mut untrusting = std::process::Command::new(berth_tests::cluster::berth_bin());
    untrusting
        .args(["node", "ls"])
        .env("BERTH_MASTER", &master.url)
        .env("BERTH_TOKEN", master.token())
        .env_remove("BERTH_CA");
    let out = untrusting.output().unwrap();
    assert!(!out.status.success(), "the system's roots do not know the test CA");
    let out = untrusting.env("BERTH_CA", pki.path("other-ca.pem")).output().unwrap();
    assert!(!out.status.success(), "a CA that did not issue the master's certificate");
    assert!(stderr(&out).contains("cannot reach the master"), "{}", stderr(&out));

    // Plain HTTP on the TLS port is answered, in plain HTTP, with what to do instead.
    let plain = format!("http://127.0.0.1:{}/health", master.port);
    let response = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(&plain)
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let text = response.into_body().read_to_string().unwrap();
    assert!(text.contains("HTTPS only") && text.contains("--ca"), "{text}");

    // An agent that verifies the master joins, presenting a client certificate or not (optional here).
    let _with_cert = Agent::start(
        &master,
        "with-cert",
        &[
            "--simulate",
            "--ca",
            &ca,
            "--tls-cert",
            &pki.arg("client.pem"),
            "--tls-key",
            &pki.arg("client.key"),
        ],
    );
    let _without_cert = Agent::start(&master, "without-cert", &["--simulate", "--ca", &ca]);
    eventually("both agents to join over TLS", Duration::from_secs(30), || {
        (joined(&master, "with-cert") && joined(&master, "without-cert")).then_some(())
    });

    // One that cannot verify the master never joins, and its log says why.
    let lost = Agent::start(&master, "wrong-ca", &["--simulate", "--ca", &pki.arg("other-ca.pem")]);
    eventually("the agent to say it cannot connect", Duration::from_secs(30), || {
        lost.logs().contains("connecting to the master").then_some(())
    });
    assert!(!joined(&master, "wrong-ca"));
}

#[test]
fn a_master_that_requires_client_certificates_lets_in_only_agents_that_present_one() {
    let pki = Pki::new();
    let config = pki.path("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nrequire_client_cert = true\n",
            pki.arg("server.pem"),
            pki.arg("server.key"),
            pki.arg("ca.pem")
        ),
    )
    .unwrap();
    let client = (pki.path("client.pem"), pki.path("client.key"));
    let master = Master::start_tls(
        &["--no-local-agent", "--config", config.to_str().unwrap()],
        Path::new(&pki.path("ca.pem")),
        Some((client.0.as_path(), client.1.as_path())),
    );
    // The test's own client presents the certificate; one without is refused at the handshake.
    assert_eq!(master.get("/v1/nodes"), serde_json::json!([]));
    let bare = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[ureq::tls::Certificate::from_pem(
                    &std::fs::read(pki.path("ca.pem")).unwrap(),
                )
                .unwrap()]))
                .build(),
        )
        .build()
        .new_agent();
    assert!(bare.get(&format!("{}/health", master.url)).call().is_err(), "no certificate, no connection");
    let ca = pki.arg("ca.pem");
    let with_cert = Agent::start(
        &master,
        "with-cert",
        &[
            "--simulate",
            "--ca",
            &ca,
            "--tls-cert",
            &pki.arg("client.pem"),
            "--tls-key",
            &pki.arg("client.key"),
        ],
    );
    let without = Agent::start(&master, "without-cert", &["--simulate", "--ca", &ca]);
    eventually("the agent with a certificate to register", Duration::from_secs(30), || {
        with_cert.logs().contains("registered").then_some(())
    });
    // With TLS 1.3 the client learns of the refusal with its first request, not in the handshake; the
    // request may also race the server's alert and see only a closed connection. Either way the agent keeps
    // retrying, and an attempt names the missing certificate.
    eventually(
        "the agent without one to be refused for its missing certificate",
        Duration::from_secs(30),
        || without.logs().contains("CertificateRequired").then_some(()),
    );
    assert!(!without.logs().contains("registered"), "{}", without.logs());
}
