//! Running the real binary: one-shot commands (`run`) and long-lived processes
//! (`Process`, e.g. `serve`), each in a scratch working directory with an empty
//! environment (only `PATH`, `APP_CONFIG_DIR` and what the test sets), so no `.env` file
//! is read. Used by the CLI tests and by the job tests that kill and restart servers.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::support::app::base_env;

pub const BIN: &str = env!("CARGO_BIN_EXE_agents-api");
pub const CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
/// The longest any poll waits (a process to exit, a listener to answer).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A scratch working directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("agents-api-cli-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with `args`, an empty environment plus `env`, run in `dir`.
pub fn command(dir: &Path, env: &HashMap<String, String>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("APP_CONFIG_DIR", CONFIG_DIR);
    cmd.envs(env);
    cmd.stdin(Stdio::null());
    cmd
}

/// What a finished run printed.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Both streams, for assertion messages and leak checks.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs the binary to completion (every command but `serve` exits on its own).
pub fn run(env: &HashMap<String, String>, args: &[&str]) -> Run {
    let dir = TempDir::new();
    let output = command(dir.path(), env, args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A running process whose output goes to files (a pipe nobody reads could fill up and
/// block it). It is killed when dropped, so a failing test leaves nothing behind.
pub struct Process {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

impl Process {
    pub fn spawn(env: &HashMap<String, String>, args: &[&str]) -> Process {
        let dir = TempDir::new();
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let child = command(dir.path(), env, args)
            .stdout(File::create(&stdout).expect("create stdout.log"))
            .stderr(File::create(&stderr).expect("create stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Process {
            child,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    /// The operating system's id of the process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the child process")
    }

    /// Waits (up to `PATIENCE`) for the process to exit on its own.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if started.elapsed() > PATIENCE {
                panic!(
                    "the process did not exit within {PATIENCE:?}\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `signal` (a name such as `TERM`) through kill(1), no extra crate needed.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends SIGKILL (`kill -9`): the process dies at once, with no chance to clean up.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub fn kill9(&self) {
        self.signal("KILL");
    }

    /// Polls `url` until it answers 200; panics with the process's output if the
    /// process exits first or nothing answers within `PATIENCE`.
    pub async fn wait_for_200(&mut self, url: &str) -> Value {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "the server exited ({status}) before {url} answered 200\n{}",
                    self.output()
                );
            }
            let last = match client.get(url).send().await {
                Ok(response) if response.status() == 200 => {
                    return response.json().await.unwrap_or(Value::Null);
                }
                Ok(response) => format!(
                    "{}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > PATIENCE {
                panic!(
                    "{url} did not answer 200 within {PATIENCE:?} (last: {last})\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A port nothing listens on (bound once by the OS, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The environment of `serve` on `127.0.0.1:port` against `db` through `database_url`,
/// without a metrics listener, with a 5 s grace period and no drain delay.
pub fn serve_env(db: &str, database_url: String, port: u16) -> HashMap<String, String> {
    let mut env = base_env(db);
    env.insert("DATABASE_URL".into(), database_url);
    env.insert("HTTP_ADDR".into(), format!("127.0.0.1:{port}"));
    env.insert("METRICS_ADDR".into(), String::new());
    env.insert("SHUTDOWN_GRACE_SECS".into(), "5".into());
    env.insert("SHUTDOWN_DRAIN_DELAY_SECS".into(), "0".into());
    env
}
