//! The processes of a bench run: a private nats-server and `hookline` roles started as child
//! processes of this binary, on free loopback ports in a temporary folder, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hookline_shared::channel::ChannelDecl;
use hookline_shared::config::Config;
use hookline_shared::crypto::generate_key_base64;
use hookline_shared::harness::powercut::PowerCutFs;
use hookline_shared::servers::{find_nats_server, free_port, ClusterNode, Fsync, NatsProcess, StartOptions};
use hookline_shared::{Secret, Source};

use crate::workload::{Template, TENANT};

/// A `hookline` child process.
pub struct Role {
    pub name: String,
    pub child: Child,
    pub port: u16,
}

impl Role {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resident memory of a process in MiB (Linux), or 0 when unknown.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) the process `pid` has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: the fields follow the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); here 0-based after the state (field 3).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

pub struct Stack {
    // Field order matters: roles and servers stop, then the power-cut mount goes, then the folder.
    pub roles: Vec<Role>,
    /// One server, or the three nodes of a cluster.
    pub nats: Vec<NatsProcess>,
    /// The filesystem under the nats-server's store, for the power-cut fault.
    power: Option<PowerCutFs>,
    pub key: Secret,
    pub sink_secret: Secret,
    /// The delivery log and the lookup index (`forwarder.attempts_log`, `normalizer.index`).
    pub attempts_log: bool,
    exe: PathBuf,
    dir: tempfile::TempDir,
}

/// The secret each source's bench channel is signed with.
pub fn secret_for(source: Source) -> String {
    match source {
        Source::Webchat => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
        _ => format!("bench-secret-{}", source.as_str()),
    }
}

impl Stack {
    /// `binary`: the `hookline` executable for the roles (default: this one). `cluster`: three
    /// nats-server nodes with streams replicated three times, rather than one server. `fsync`:
    /// the servers' fsync policy.
    pub fn start(binary: Option<&std::path::Path>, cluster: bool, fsync: Fsync, power_cut: bool) -> Result<Stack, String> {
        let options = StartOptions { fsync, ..Default::default() };
        let dir = tempfile::Builder::new().prefix("hookline-bench-").tempdir().map_err(|e| e.to_string())?;
        // The power-cut fault: the store on a filesystem that forgets what was not fsynced.
        let (power, store) = if power_cut {
            std::fs::create_dir_all(dir.path().join("disk")).map_err(|e| e.to_string())?;
            let fs =
                PowerCutFs::mount(&dir.path().join("disk"), &dir.path().join("mnt")).map_err(|e| format!("power-cut filesystem: {e}"))?;
            (Some(fs), dir.path().join("mnt"))
        } else {
            (None, dir.path().to_path_buf())
        };
        let nats_binary = find_nats_server().map_err(|e| e.to_string())?;
        let mut nats = Vec::new();
        if cluster {
            let ports: Vec<(u16, u16)> =
                (0..3).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_, std::io::Error>>().map_err(|e| e.to_string())?;
            for (i, (port, cluster_port)) in ports.iter().enumerate() {
                let routes: Vec<u16> = ports.iter().filter(|(p, _)| p != port).map(|(_, c)| *c).collect();
                let name = format!("n{}", i + 1);
                let node = ClusterNode { name: &name, port: *port, cluster_port: *cluster_port, routes: &routes };
                nats.push(
                    NatsProcess::start_node(&nats_binary, &dir.path().join(&name), &node, options.clone()).map_err(|e| e.to_string())?,
                );
            }
        } else {
            let port = free_port().map_err(|e| e.to_string())?;
            nats.push(NatsProcess::start_with(&nats_binary, &store.join("nats"), port, options.clone()).map_err(|e| e.to_string())?);
        }
        let key = generate_key_base64().map_err(|e| e.to_string())?;
        let sink_secret = Secret::new(format!("whsec_{}", generate_key_base64().map_err(|e| e.to_string())?.expose()));
        let exe = match binary {
            Some(b) => b.to_path_buf(),
            None => std::env::current_exe().map_err(|e| e.to_string())?,
        };
        Ok(Stack { roles: Vec::new(), nats, power, key, sink_secret, attempts_log: true, exe, dir })
    }

    /// Cuts the power under the (single) nats-server: SIGKILL, then every write it did not fsync
    /// is forgotten. Returns the bytes dropped.
    pub fn cut_power(&mut self) -> Result<u64, String> {
        let fs = self.power.take().ok_or("the stack was not started for a power cut")?;
        for n in &mut self.nats {
            n.kill();
        }
        Ok(fs.cut_power().dropped_bytes)
    }

    /// After a power cut: the filesystem comes back with what was synced, the server starts
    /// again on the same port and store.
    pub fn reboot(&mut self) -> Result<(), String> {
        let fs = PowerCutFs::mount(&self.dir.path().join("disk"), &self.dir.path().join("mnt")).map_err(|e| format!("remount: {e}"))?;
        self.power = Some(fs);
        for n in &mut self.nats {
            n.restart().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        self.nats.iter().map(NatsProcess::url).collect::<Vec<_>>().join(",")
    }

    pub fn clustered(&self) -> bool {
        self.nats.len() > 1
    }

    /// A configuration as the roles will see it, for this process's own use (channels, streams).
    pub fn config(&self) -> Result<Config, String> {
        let vars = self.env().into_iter().collect::<Vec<_>>();
        Config::load_with_env(&hookline_shared::config::Sources::default(), &vars).map_err(|e| e.to_string())
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("HOOKLINE_NATS__URL".into(), self.url()),
            ("HOOKLINE_SECRETS__KEY".into(), self.key.expose().into()),
            ("HOOKLINE_LOG__LEVEL".into(), "warn".into()),
            ("HOOKLINE_LOG__FORMAT".into(), "json".into()),
            ("HOOKLINE_DATA_DIR".into(), self.dir.path().display().to_string()),
        ];
        if self.clustered() {
            for stream in ["RAW", "EVENTS", "DLQ", "ATTEMPTS", "CHANNELS"] {
                env.push((format!("HOOKLINE_STREAMS__{stream}__REPLICAS"), "3".into()));
            }
        }
        if !self.attempts_log {
            env.push(("HOOKLINE_FORWARDER__ATTEMPTS_LOG".into(), "false".into()));
            env.push(("HOOKLINE_NORMALIZER__INDEX".into(), "false".into()));
        }
        env
    }

    /// Starts `hookline <args>` with the stack's environment plus `extra`.
    pub fn spawn(&mut self, name: &str, args: &[&str], extra: &[(&str, String)], port: u16) -> Result<usize, String> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        for (k, _) in std::env::vars() {
            // The group commit's settings pass through, so that a bench can compare them.
            if k.starts_with("HOOKLINE_") && k != "HOOKLINE_NATS_SERVER" && !k.starts_with("HOOKLINE_NATS__GROUP_COMMIT_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
        self.roles.push(Role { name: name.to_string(), child, port });
        Ok(self.roles.len() - 1)
    }

    pub fn spawn_ingest(&mut self) -> Result<u16, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        self.spawn("ingest", &["ingest"], &[("HOOKLINE_INGEST__LISTEN", format!("127.0.0.1:{port}"))], port)?;
        Ok(port)
    }

    pub fn spawn_normalizer(&mut self, n: usize) -> Result<(), String> {
        let port = free_port().map_err(|e| e.to_string())?;
        self.spawn(
            &format!("normalizer-{n}"),
            &["normalizer"],
            &[("HOOKLINE_NORMALIZER__LISTEN", format!("127.0.0.1:{port}")), ("HOOKLINE_NORMALIZER__ACK_WAIT_S", "10".to_string())],
            port,
        )?;
        Ok(())
    }

    /// A forwarder delivering to `target` (the destination `default`), or, with `None`, to the
    /// destinations of the bucket only.
    pub fn spawn_forwarder(&mut self, n: usize, target: Option<&str>) -> Result<(), String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let mut env = vec![
            ("HOOKLINE_FORWARDER__LISTEN", format!("127.0.0.1:{port}")),
            ("HOOKLINE_FORWARDER__SIGNING_SECRET", self.sink_secret.expose().to_string()),
            ("HOOKLINE_FORWARDER__RETRY_SCHEDULE_S", "[1, 2, 4, 8, 15, 30, 60, 120]".to_string()),
            ("HOOKLINE_FORWARDER__ACK_WAIT_S", "10".to_string()),
        ];
        if let Some(target) = target {
            env.push(("HOOKLINE_FORWARDER__TARGET_URL", target.to_string()));
        }
        self.spawn(&format!("forwarder-{n}"), &["forwarder"], &env, port)?;
        Ok(())
    }

    /// Writes one destination per URL to the bucket (`d1`, `d2`, ...: every event, signed with
    /// the sinks' secret).
    pub async fn write_destinations(&self, urls: &[String]) -> Result<(), String> {
        let specs: Vec<_> = urls
            .iter()
            .enumerate()
            .map(|(i, url)| (format!("d{}", i + 1), url.clone(), hookline_shared::destination::Ordering::None))
            .collect();
        self.write_destination_specs(&specs).await
    }

    /// Writes destinations `(id, url, ordering)`: every event, signed with the sinks' secret.
    pub async fn write_destination_specs(&self, specs: &[(String, String, hookline_shared::destination::Ordering)]) -> Result<(), String> {
        let config = self.config()?;
        let addrs = hookline_shared::jetstream::server_addrs(&self.url())?;
        let client = async_nats::connect(addrs).await.map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.map_err(|e| e.to_string())?;
        let store = hookline_shared::jetstream::destinations_bucket(&js, &config.streams).await.map_err(|e| e.to_string())?;
        let keyring = config.keyring().map_err(|e| e.to_string())?;
        for (id, url, ordering) in specs {
            let mut spec = hookline_shared::destination::DestinationSpec::new(url.clone(), self.sink_secret.clone());
            spec.id = Some(id.clone());
            spec.ordering = *ordering;
            let record = hookline_shared::destination::DestinationRecord::seal(&spec, &keyring, time::OffsetDateTime::now_utc())
                .map_err(|e| e.to_string())?;
            let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            store.put(id.as_str(), json.into()).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn spawn_sink(&mut self) -> Result<u16, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let secret = self.sink_secret.expose().to_string();
        self.spawn(
            &format!("sink-{port}"),
            &["sink"],
            &[("HOOKLINE_SINK__LISTEN", format!("127.0.0.1:{port}")), ("HOOKLINE_SINK__SIGNING_SECRET", secret)],
            port,
        )?;
        Ok(port)
    }

    pub fn spawn_baseline(&mut self) -> Result<u16, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let url = self.url();
        self.spawn("baseline", &["bench", "serve-baseline", "--nats", &url, "--listen", &format!("127.0.0.1:{port}")], &[], port)?;
        Ok(port)
    }

    /// Kills the role at `index` (SIGKILL) and starts it again with the same arguments.
    pub fn kill_role(&mut self, index: usize) {
        if let Some(role) = self.roles.get_mut(index) {
            role.kill();
        }
    }

    /// Writes one channel per template to the KV bucket, creating streams first.
    pub async fn write_channels(&self, templates: &[Template]) -> Result<(), String> {
        let config = self.config()?;
        let addrs = hookline_shared::jetstream::server_addrs(&self.url())?;
        let client = async_nats::connect(addrs).await.map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.map_err(|e| e.to_string())?;
        let store = hookline_shared::jetstream::channels_bucket(&js, &config.streams).await.map_err(|e| e.to_string())?;
        let keyring = config.keyring().map_err(|e| e.to_string())?;
        for t in templates {
            let decl = ChannelDecl {
                id: t.channel_id.clone(),
                tenant_id: TENANT.into(),
                source: t.source,
                secret: Secret::new(secret_for(t.source)),
                verify_token: None,
                platform: None,
                name: None,
                default: false,
                settings: Default::default(),
            };
            let record = decl.to_record(&keyring, time::OffsetDateTime::now_utc());
            let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
            store.put(&t.channel_id, json.into()).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Polls `url` until it answers 200, up to `limit`.
pub async fn wait_http_ok(url: &str, limit: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if http_get(url).await.is_some_and(|(status, _)| status == 200) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{url} not ready within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A GET over a fresh connection: (status, body).
pub async fn http_get(url: &str) -> Option<(u16, bytes::Bytes)> {
    request("GET", url, bytes::Bytes::new()).await
}

pub async fn http_post(url: &str, body: &str) -> Option<(u16, bytes::Bytes)> {
    request("POST", url, bytes::Bytes::from(body.to_string())).await
}

async fn request(method: &str, url: &str, body: bytes::Bytes) -> Option<(u16, bytes::Bytes)> {
    use http_body_util::{BodyExt, Full};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    let request = hyper::Request::builder().method(method).uri(path).header("host", authority).body(Full::new(body)).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await.ok()?.ok()?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, bytes))
}
