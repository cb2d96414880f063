//! Running `velostream run` as a child process in the tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};

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

/// Starts `velostream run -q app` in the background with `env` set, its
/// stderr kept for [`stop`].
#[allow(dead_code)] // not every test binary starts jobs in the background
pub fn spawn_run(app: &Path, env: &[(&str, &str)]) -> Child {
    spawn_run_with(app, &[], env)
}

/// [`spawn_run`] with more `run` arguments (`--checkpoint-interval`, …).
#[allow(dead_code)]
pub fn spawn_run_with(app: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args(["run", "-q"])
        .args(args)
        .arg(app)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A `velostream run` in the background, killed if the test fails before
/// it ends.
#[allow(dead_code)]
pub struct Member(pub Option<Child>);

#[allow(dead_code)]
impl Member {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    /// Stops the member cleanly; its log.
    pub fn stop(mut self) -> String {
        stop(self.0.take().expect("running"))
    }

    /// Kills it with SIGKILL.
    pub fn kill(mut self) {
        let mut child = self.0.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
