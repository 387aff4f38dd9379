//! Test support: builds the guest fixtures once, starts the real `nimbus` binary on
//! free loopback ports with a temporary data dir, and talks to it over HTTP and
//! through the CLI.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn nimbus_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nimbus")
}

/// Builds `test-programs/` (once per test run) and returns the path of a fixture.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = repo_root().join("test-programs");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root.join("Cargo.toml"))
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .status()
            .expect("run cargo for test-programs");
        assert!(status.success(), "building test-programs failed");
        root.join("target/wasm32-wasip2/release")
    });
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.is_file(), "fixture {} missing", path.display());
    path
}

/// A loopback port nothing listens on, from below the kernel's ephemeral range.
///
/// A port the kernel hands out for `bind(0)` comes from the same range as the local
/// ports of outgoing connections, so between this call and the node's own bind another
/// test's client could take it. Ports below that range are only ever taken by an
/// explicit bind; a per-process counter (offset by the pid, for concurrent test
/// binaries) keeps two nodes of this run from being handed the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = ephemeral_low().max(LOW + 1_000);
    let span = high - LOW;
    let offset = std::process::id() * 97;
    loop {
        let port = (LOW + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The first port of `net.ipv4.ip_local_port_range` (Linux's default is 32768).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A folder with a `nimbus.toml` (and whatever else a test writes there).
pub struct AppDir {
    pub dir: tempfile::TempDir,
}

impl AppDir {
    /// Writes `manifest` after replacing `{http}`, `{event}`, `{data}` and `{kv-wasi}`
    /// with fixture paths.
    pub fn new(manifest: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = manifest
            .replace("{http}", &fixture("http_fixture").display().to_string())
            .replace("{event}", &fixture("event_fixture").display().to_string())
            .replace("{data}", &fixture("data_fixture").display().to_string())
            .replace(
                "{kv-wasi}",
                &fixture("kv_wasi_fixture").display().to_string(),
            );
        std::fs::write(dir.path().join("nimbus.toml"), text).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rewrite(&self, manifest: &str) {
        let again = AppDir::new(manifest);
        std::fs::copy(
            again.path().join("nimbus.toml"),
            self.path().join("nimbus.toml"),
        )
        .unwrap();
    }
}

/// A running `nimbus serve` (or `up`) process.
pub struct TestNode {
    child: Option<Child>,
    pub gateway: String,
    pub admin: String,
    pub data_dir: PathBuf,
    log: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
    listen: u16,
    admin_listen: u16,
}

impl TestNode {
    /// `nimbus serve` with a fresh data dir.
    pub fn serve() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().to_path_buf();
        let mut node = Self::start_in(&data_dir, &["serve"]);
        node._tmp = Some(tmp);
        node
    }

    /// Starts `nimbus ARGS --listen … --admin-listen … --data-dir DATA_DIR`.
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Self {
        let (listen, admin_listen) = (free_port(), free_port());
        let mut node = Self {
            child: None,
            gateway: format!("http://127.0.0.1:{listen}"),
            admin: format!("http://127.0.0.1:{admin_listen}"),
            data_dir: data_dir.to_path_buf(),
            log: Arc::new(Mutex::new(String::new())),
            _tmp: None,
            listen,
            admin_listen,
        };
        // A port can still be taken by some other program between the check and the
        // node's bind; start again on fresh ports rather than fail the test.
        for _ in 0..5 {
            match node.try_spawn(args) {
                Ok(()) => return node,
                Err(log) if log.contains("Address already in use") => {
                    (node.listen, node.admin_listen) = (free_port(), free_port());
                    node.gateway = format!("http://127.0.0.1:{}", node.listen);
                    node.admin = format!("http://127.0.0.1:{}", node.admin_listen);
                    *node.log.lock().unwrap() = String::new();
                }
                Err(log) => panic!("{log}"),
            }
        }
        panic!("nimbus found no free ports:\n{}", node.log());
    }

    fn spawn(&mut self, args: &[&str]) {
        if let Err(log) = self.try_spawn(args) {
            panic!("{log}");
        }
    }

    fn try_spawn(&mut self, args: &[&str]) -> Result<(), String> {
        let mut child = Command::new(nimbus_bin())
            .args(args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.listen))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", self.admin_listen))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("NIMBUS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nimbus");
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // Let the reader threads take in the last lines before reporting them.
                std::thread::sleep(Duration::from_millis(100));
                self.child = None;
                return Err(format!("nimbus exited early ({status}):\n{}", self.log()));
            }
            if health_ok(self.admin_listen) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "nimbus did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never showed `{needle}`:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a client verb against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(nimbus_bin())
            .args(args)
            .arg("--server")
            .arg(&self.admin)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run nimbus")
    }

    /// `nimbus deploy DIR`, asserting success; returns stdout.
    pub fn deploy(&self, dir: &Path) -> String {
        let out = self.cli(&["deploy", dir.to_str().unwrap()]);
        assert!(out.status.success(), "deploy failed:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// A request to the admin API, with the node's token.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let token = std::fs::read_to_string(self.data_dir.join("admin-token")).unwrap();
        http()
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(token.trim())
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// CPU time the node has used so far (user + system), from `/proc`.
    pub fn cpu_time(&self) -> Duration {
        let pid = self.child.as_ref().unwrap().id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // Linux reports these in USER_HZ, 100 per second on every architecture it runs on.
        Duration::from_millis(ticks * 10)
    }

    /// `kill -9` and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.take().unwrap().wait().unwrap()
    }

    /// Starts the process again on the same ports and data dir.
    pub fn restart(&mut self, args: &[&str]) {
        self.kill9();
        self.spawn(args);
    }

    pub async fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until `function` of `app` has `busy` requests in flight.
    pub async fn wait_busy(&self, app: &str, function: &str, busy: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.function_status(app, function).await["busy_instances"] != busy {
            assert!(
                Instant::now() < deadline,
                "{app}/{function} never had {busy} busy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The status entry of one function.
    pub async fn function_status(&self, app: &str, function: &str) -> serde_json::Value {
        let status = self.status().await;
        status["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == app)
            .and_then(|a| {
                a["functions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| f["name"] == function)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no function {app}/{function} in {status}"))
    }
}

/// `GET /v1/health` over a plain socket answers 200.
fn health_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /v1/health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A manifest with one HTTP fixture function `api` behind `* /{*path}`.
pub fn http_app(name: &str, function_settings: &str) -> String {
    format!(
        "[app]\nname = \"{name}\"\n\n[functions.api]\nsource = \"{{http}}\"\n{function_settings}\n\n\
         [[routes]]\npath = \"/{{*path}}\"\nfunction = \"api\"\n"
    )
}
