//! Where a running `hookline up` serves: `up` writes `data_dir/running.json` (mode 0600) once its
//! parts are up and removes it when it stops; operator commands run from the same folder
//! (`hookline dlq`, `replay`, `secrets rotate-key`, ...) read it to find the private nats-server
//! and Postgres with no configuration. A configured URL always wins.
//!
//! The record names the process that wrote it (pid and its start time, from `/proc`), so a
//! record left behind by an `up` that was killed is known to be stale, even when its pid has
//! been reused since.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};
use crate::Secret;

/// The file, under `data_dir`.
pub const RECORD_FILE: &str = "running.json";

/// What `hookline up` serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunningUp {
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub started_ticks: u64,
    /// Its private nats-server, when it started one.
    pub nats_url: Option<String>,
    /// Its private Postgres, when it started one (no password: local trust).
    pub database_url: Option<String>,
    /// The file holding the key it generated, when it generated one.
    pub secrets_key_file: Option<PathBuf>,
    pub ingest_url: String,
    pub setup_api_url: String,
}

/// Why a record was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(RunningUp),
    Missing(PathBuf),
    Stale(PathBuf),
    Unreadable(PathBuf, String),
}

/// The start time of process `pid`, in clock ticks since boot.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is then index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl RunningUp {
    /// The record of this process.
    pub fn for_this_process(ingest_url: String, setup_api_url: String) -> RunningUp {
        let pid = std::process::id();
        RunningUp {
            pid,
            started_ticks: process_start_ticks(pid).unwrap_or(0),
            nats_url: None,
            database_url: None,
            secrets_key_file: None,
            ingest_url,
            setup_api_url,
        }
    }

    /// Whether the process that wrote it still runs.
    pub fn is_live(&self) -> bool {
        process_start_ticks(self.pid) == Some(self.started_ticks)
    }

    /// Writes the record under `data_dir`, mode 0600.
    pub fn write(&self, data_dir: &Path) -> std::io::Result<PathBuf> {
        let path = data_dir.join(RECORD_FILE);
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let tmp = data_dir.join(format!("{RECORD_FILE}.tmp"));
        crate::servers::write_private_file(&tmp, &text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Removes the record under `data_dir` if it is this one.
    pub fn remove(&self, data_dir: &Path) {
        if let Lookup::Found(found) = lookup(data_dir) {
            if found.pid == self.pid {
                let _ = std::fs::remove_file(data_dir.join(RECORD_FILE));
            }
        }
    }
}

/// Reads the record under `data_dir`, if a live `up` wrote it.
pub fn lookup(data_dir: &Path) -> Lookup {
    let path = data_dir.join(RECORD_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Missing(path),
        Err(e) => return Lookup::Unreadable(path, e.to_string()),
    };
    match serde_json::from_str::<RunningUp>(&text) {
        Ok(r) if r.is_live() => Lookup::Found(r),
        Ok(_) => Lookup::Stale(path),
        Err(e) => Lookup::Unreadable(path, e.to_string()),
    }
}

/// What an operator command needs from a running `up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub nats: bool,
    pub database: bool,
    pub secrets_key: bool,
}

/// Fills what `needs` asks for and the configuration leaves unset from the running `up` in
/// `config.data_dir`. Fails naming the first missing key, with how to point the command at a
/// server, when there is no live `up` to take it from.
pub fn fill_from_running_up(config: &mut Config, needs: Needs) -> Result<(), ConfigError> {
    let missing_nats = needs.nats && config.nats.url.is_none();
    let missing_db = needs.database && config.database.url.is_none();
    let missing_key = needs.secrets_key && config.secrets.key.is_none();
    if !(missing_nats || missing_db || missing_key) {
        return Ok(());
    }
    let found = lookup(&config.data_dir);
    let why = match &found {
        Lookup::Found(_) => String::new(),
        Lookup::Missing(p) => format!("no `hookline up` is running here ({} does not exist)", p.display()),
        Lookup::Stale(p) => format!("the `hookline up` that wrote {} has stopped", p.display()),
        Lookup::Unreadable(p, e) => format!("{} cannot be read: {e}", p.display()),
    };
    let record = if let Lookup::Found(r) = found { Some(r) } else { None };
    if missing_nats {
        match record.as_ref().and_then(|r| r.nats_url.clone()) {
            Some(url) => config.nats.url = Some(url),
            None => return Err(not_found("nats.url", "HOOKLINE_NATS__URL=nats://host:4222", &why)),
        }
    }
    if missing_db {
        match record.as_ref().and_then(|r| r.database_url.clone()) {
            Some(url) => config.database.url = Some(Secret::new(url)),
            None => return Err(not_found("database.url", "HOOKLINE_DATABASE__URL=postgres://user@host/db", &why)),
        }
    }
    if missing_key {
        let key = record.as_ref().and_then(|r| r.secrets_key_file.as_ref()).and_then(|p| std::fs::read_to_string(p).ok());
        match key {
            Some(k) => {
                config.secrets.key = Some(Secret::new(k.trim().to_string()));
                config.validate()?;
            }
            None => return Err(not_found("secrets.key", "HOOKLINE_SECRETS__KEY_FILE=/path/to/key", &why)),
        }
    }
    Ok(())
}

fn not_found(key: &'static str, example: &str, why: &str) -> ConfigError {
    let why = if why.is_empty() { "the running `hookline up` did not start one".to_string() } else { why.to_string() };
    ConfigError::new(key, format!("required, and {why}: start `hookline up` in this folder, or set {key} in hookline.toml, or {example}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_this_process_is_live_and_one_of_a_dead_process_is_stale() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let me = RunningUp::for_this_process("http://127.0.0.1:1".into(), "http://127.0.0.1:2".into());
        assert!(me.is_live());
        me.write(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lookup(dir.path()), Lookup::Found(me.clone()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(RECORD_FILE)).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600);

        // Same pid, other start time: the pid was reused by another process.
        let reused = RunningUp { started_ticks: me.started_ticks + 1, ..me.clone() };
        reused.write(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(lookup(dir.path()), Lookup::Stale(_)));

        me.write(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        me.remove(dir.path());
        assert!(matches!(lookup(dir.path()), Lookup::Missing(_)));
    }

    #[test]
    fn a_missing_record_names_the_key_and_how_to_set_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let vars = vec![("HOOKLINE_DATA_DIR".to_string(), dir.path().display().to_string())];
        let mut config = Config::load_with_env(&crate::config::Sources::default(), &vars).unwrap_or_else(|e| panic!("{e}"));
        let err = fill_from_running_up(&mut config, Needs { nats: true, database: false, secrets_key: false })
            .err()
            .unwrap_or_else(|| panic!("no record, yet filled"));
        let text = err.to_string();
        assert!(text.contains("nats.url") && text.contains("hookline up") && text.contains("HOOKLINE_NATS__URL"), "{text}");
    }
}
