//! A throwaway PostgreSQL cluster: `initdb` in a temporary directory, `pg_ctl start` on
//! 127.0.0.1 and a free port, `pg_ctl stop` and removal of the directory when dropped.
//!
//! The server refuses to run as root, so when this process is root the cluster belongs to the
//! `postgres` user and every server command runs through `runuser -u postgres --`. The
//! directory is created under a base directory that user must be able to enter (the system
//! temporary directory by default).

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Server settings beyond the defaults. None of them changes durability (`fsync`,
/// `synchronous_commit`, `wal_sync_method` and `full_page_writes` keep their defaults); they
/// give the server the memory and WAL room a production set-up would give it.
pub const SETTINGS: &[(&str, &str)] = &[
    ("max_connections", "200"),
    ("shared_buffers", "1GB"),
    ("max_wal_size", "4GB"),
    // Keeps the WAL files a checkpoint retires for reuse (see `WAL_WARMUP_SQL`).
    ("min_wal_size", "2GB"),
];

/// Run once on a new cluster before anything is timed: about 1 GB of WAL, then a checkpoint,
/// which keeps those files for reuse. A new cluster has one WAL file, and until its first
/// checkpoint each further file is created and zero-filled by the session that needs it,
/// inside its commit: a long-running server reuses old files instead. Without this a
/// review measured workload 3 on PostgreSQL a third slower than on a warmed cluster.
pub const WAL_WARMUP_SQL: &str = "
CREATE TABLE wal_warmup AS SELECT g, repeat('x', 900) AS pad FROM generate_series(1, 1000000) g;
DROP TABLE wal_warmup;
CHECKPOINT;";

/// A running throwaway cluster.
pub struct PgServer {
    /// The cluster's directory (data, log, socket); removed when dropped.
    root: Option<tempfile::TempDir>,
    data: PathBuf,
    pg_ctl: PathBuf,
    as_postgres: bool,
    port: u16,
    running: bool,
}

/// Where a program is on the `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether this process runs as root.
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn output_text(out: &std::process::Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s.trim().to_string()
}

fn id_of_postgres(flag: &str) -> anyhow::Result<u32> {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .context("running `id` to find the postgres user")?;
    if !out.status.success() {
        bail!(
            "there is no `postgres` user to run the server as: {}",
            output_text(&out)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parsing the output of `id`")
}

/// The last lines of a file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

impl PgServer {
    /// Creates and starts a cluster in a new directory under `base`.
    pub fn start(base: &Path) -> anyhow::Result<PgServer> {
        let initdb = find_on_path("initdb")
            .context("PostgreSQL's `initdb` is not on the PATH (install the server binaries, or set ORCHESTRIX_PG_URL)")?;
        let pg_ctl = find_on_path("pg_ctl")
            .context("PostgreSQL's `pg_ctl` is not on the PATH (install the server binaries, or set ORCHESTRIX_PG_URL)")?;
        let as_postgres = running_as_root();
        let root = tempfile::Builder::new()
            .prefix("orchestrix-compare-pg-")
            .tempdir_in(base)
            .with_context(|| {
                format!("creating a directory for PostgreSQL in {}", base.display())
            })?;
        if as_postgres {
            let (uid, gid) = (id_of_postgres("-u")?, id_of_postgres("-g")?);
            std::os::unix::fs::chown(root.path(), Some(uid), Some(gid)).with_context(|| {
                format!("giving {} to the postgres user", root.path().display())
            })?;
        }
        let data = root.path().join("data");
        let mut server = PgServer {
            data,
            pg_ctl,
            as_postgres,
            port: 0,
            running: false,
            root: None,
        };
        // From here on, dropping `server` stops whatever was started and removes the directory.
        let root_path = root.path().to_path_buf();
        server.root = Some(root);

        let out = server
            .command(&initdb)
            .arg("-D")
            .arg(&server.data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", output_text(&out));
        }

        let log = root_path.join("server.log");
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut opts = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
                root_path.display()
            );
            for (k, v) in SETTINGS {
                opts.push_str(&format!(" -c {k}={v}"));
            }
            let out = server
                .command(&server.pg_ctl)
                .arg("-D")
                .arg(&server.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .output()
                .context("running pg_ctl start")?;
            if out.status.success() {
                server.port = port;
                server.running = true;
                return Ok(server);
            }
            last_error = format!("{}\n{}", output_text(&out), tail(&log, 20));
            // Another process may have taken the port between our probe and the start.
            if !last_error.contains("could not bind") && !last_error.contains("in use") {
                break;
            }
        }
        bail!("PostgreSQL did not start: {last_error}")
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// The connection string (tokio-postgres key=value form).
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Stops the server (fast shutdown) and removes its directory.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.running {
            self.running = false;
            let out = self
                .command(&self.pg_ctl)
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "-t", "60", "stop"])
                .output()
                .context("running pg_ctl stop")?;
            if !out.status.success() {
                bail!("pg_ctl stop failed: {}", output_text(&out));
            }
        }
        if let Some(root) = self.root.take() {
            let path = root.path().to_path_buf();
            root.close()
                .with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warning: stopping the throwaway PostgreSQL server: {e:#}");
        }
    }
}
