//! Running `velostream run` as a child process in the tests.

use std::process::{Child, Command};

/// Stops a `velostream run` with SIGTERM (a clean drain), asserts that it
/// exited cleanly, and returns its stderr.
pub fn stop(child: Child) -> String {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "no clean stop:\n{stderr}");
    stderr
}
