//! The `berth` binary's own command line: help, configuration errors, unreachable masters.

use std::process::Command;

fn berth(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth")).args(args).env_remove("BERTH_TOKEN").output().unwrap()
}

#[test]
fn help_lists_every_command() {
    let out = berth(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for command in ["serve", "agent", "plugin", "allocator", "framework", "node", "task"] {
        assert!(text.contains(command), "{command} missing from:\n{text}");
    }
}

#[test]
fn a_bad_configuration_is_refused_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "[master]\ncycle_intervall_ms = 5\n").unwrap();
    let out =
        berth(&["serve", "--config", config.to_str().unwrap(), "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("error:") && err.contains("cycle_intervall_ms"), "{err}");
}

#[test]
fn a_client_command_without_a_master_says_where_it_looked() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = berth(&["node", "ls", "--master", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: cannot reach the master at http://127.0.0.1:"), "{err}");
}
