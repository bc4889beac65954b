//! A private PostgreSQL for when no `DATABASE_URL` is given, so that the service runs on a fresh
//! machine with no setup. It uses the PostgreSQL binaries installed on the machine, keeps its
//! cluster under the data directory, listens on a Unix socket only (no port to collide with), and is
//! stopped when the service stops. A cluster left running by a killed service is reused.
//!
//! `initdb` refuses to run as root, so as root the cluster is owned and run by an unprivileged
//! account (`postgres` if it exists, else `nobody`), which std's `CommandExt::uid` switches to
//! without any unsafe code.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::process::Command;

/// The database the service uses inside the private cluster.
const DATABASE: &str = "hotline";
/// The superuser `initdb` creates; trust authentication over the private socket only.
const SUPERUSER: &str = "hotline";
/// The socket file is `.s.PGSQL.<port>`; the port names the socket, nothing listens on TCP.
const PORT: u16 = 5432;
/// Unix socket paths are limited to 107 bytes on Linux.
const MAX_SOCKET_PATH: usize = 100;

/// Why the private PostgreSQL could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("no PostgreSQL server binaries found (looked for initdb, pg_ctl and postgres on PATH and under /usr/lib/postgresql/*/bin). Install PostgreSQL (e.g. `apt-get install postgresql`) or set DATABASE_URL")]
    BinariesNotFound,
    #[error("running as root, but neither the 'postgres' nor the 'nobody' account exists to run PostgreSQL as")]
    NoUnprivilegedUser,
    #[error("{path} is not reachable by the account PostgreSQL runs as ({user}); choose a HOTLINE_DATA_DIR outside it")]
    NotTraversable { path: PathBuf, user: String },
    #[error("the data directory path is too long for a Unix socket ({0} bytes); choose a shorter HOTLINE_DATA_DIR")]
    PathTooLong(usize),
    #[error("{step} failed: {detail}")]
    Command { step: &'static str, detail: String },
    #[error("could not prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not create the database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The unprivileged account a root process runs PostgreSQL as.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// A running private PostgreSQL.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    cluster_dir: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<RunAs>,
    started_here: bool,
}

impl EmbeddedPostgres {
    /// Starts (or reuses) the cluster under `data_dir/postgres` and makes sure the service's
    /// database exists.
    pub async fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let bin_dir = find_binaries().ok_or(EmbeddedError::BinariesNotFound)?;
        let root = absolute(&data_dir.join("postgres"))?;
        let cluster_dir = root.join("data");
        let socket_dir = root.join("run");
        let socket_len = socket_dir
            .join(format!(".s.PGSQL.{PORT}"))
            .as_os_str()
            .len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(EmbeddedError::PathTooLong(socket_len));
        }
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        for dir in [&root, &socket_dir] {
            std::fs::create_dir_all(dir).map_err(|source| EmbeddedError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        // Several processes may start at once (two services, or a test runner's processes):
        // one initialises and starts the cluster while the others wait, then find it running.
        let _starting = lock_file(&root.join("start.lock")).await?;
        if let Some(user) = &run_as {
            check_traversable(&root, user)?;
            for dir in [&root, &socket_dir] {
                std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).map_err(
                    |source| EmbeddedError::Io {
                        path: dir.clone(),
                        source,
                    },
                )?;
            }
        }
        let mut pg = Self {
            bin_dir,
            cluster_dir,
            socket_dir,
            run_as,
            started_here: false,
        };
        if !pg.cluster_dir.join("PG_VERSION").exists() {
            pg.init_cluster().await?;
        }
        if !pg.is_running().await {
            pg.start_server(&root.join("postgres.log")).await?;
            pg.started_here = true;
        }
        pg.create_database().await?;
        Ok(pg)
    }

    /// How to connect to the service's database.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options_for(DATABASE)
    }

    fn options_for(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// Stops the server if this process started it.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        if !self.started_here {
            return Ok(());
        }
        let data = self.cluster_dir.display().to_string();
        self.run(
            "pg_ctl stop",
            "pg_ctl",
            &["stop", "-D", &data, "-m", "fast", "-w"],
        )
        .await
        .map(|_| ())
    }

    async fn init_cluster(&self) -> Result<(), EmbeddedError> {
        let data = self.cluster_dir.display().to_string();
        self.run(
            "initdb",
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        )
        .await
        .map(|_| ())
    }

    async fn is_running(&self) -> bool {
        let data = self.cluster_dir.display().to_string();
        self.run("pg_ctl status", "pg_ctl", &["status", "-D", &data])
            .await
            .is_ok()
    }

    async fn start_server(&self, log: &Path) -> Result<(), EmbeddedError> {
        let data = self.cluster_dir.display().to_string();
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -p {PORT}",
            self.socket_dir.display()
        );
        let log = log.display().to_string();
        self.run(
            "pg_ctl start",
            "pg_ctl",
            &[
                "start", "-D", &data, "-w", "-t", "60", "-l", &log, "-o", &options,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn create_database(&self) -> Result<(), EmbeddedError> {
        let mut conn = self.options_for("postgres").connect().await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(DATABASE)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
                .execute(&mut conn)
                .await?;
        }
        conn.close().await?;
        Ok(())
    }

    async fn run(
        &self,
        step: &'static str,
        program: &str,
        args: &[&str],
    ) -> Result<Output, EmbeddedError> {
        let mut command = Command::new(self.bin_dir.join(program));
        command.args(args).kill_on_drop(true).env("LC_ALL", "C");
        if let Some(user) = &self.run_as {
            // The unprivileged account may not be able to read the service's working directory.
            command.uid(user.uid).gid(user.gid).current_dir("/");
        }
        let output = command.output().await.map_err(|e| EmbeddedError::Command {
            step,
            detail: e.to_string(),
        })?;
        if output.status.success() {
            Ok(output)
        } else {
            let detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            Err(EmbeddedError::Command { step, detail })
        }
    }
}

/// An exclusive lock on `path`, held until the returned file is dropped.
async fn lock_file(path: &Path) -> Result<std::fs::File, EmbeddedError> {
    let path = path.to_owned();
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| EmbeddedError::Io { path, source }
    };
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        Ok(file)
    })
    .await
    .map_err(|e| EmbeddedError::Command {
        step: "locking the data directory",
        detail: e.to_string(),
    })?
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(|source| EmbeddedError::Io {
        path: path.to_owned(),
        source,
    })
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: from PATH (following links, as Debian
/// links only some of them), else the newest `/usr/lib/postgresql/<version>/bin`.
fn find_binaries() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("initdb"))
            .filter_map(|initdb| std::fs::canonicalize(initdb).ok())
            .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
            .find(|dir| has_server_binaries(dir))
    });
    from_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, dir)| has_server_binaries(dir))
            .collect();
        versions.sort();
        versions.pop().map(|(_, dir)| dir)
    })
}

fn running_as_root() -> bool {
    // The owner of /proc/self is the process's effective user.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn unprivileged_user() -> Result<RunAs, EmbeddedError> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let find = |wanted: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                [name, _, uid, gid, ..] if *name == wanted => Some(RunAs {
                    name: wanted.to_owned(),
                    uid: uid.parse().ok()?,
                    gid: gid.parse().ok()?,
                }),
                _ => None,
            }
        })
    };
    find("postgres")
        .or_else(|| find("nobody"))
        .ok_or(EmbeddedError::NoUnprivilegedUser)
}

/// Every ancestor of `dir` must let others pass through, or the unprivileged account cannot reach
/// its own cluster.
fn check_traversable(dir: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(|source| EmbeddedError::Io {
            path: ancestor.to_owned(),
            source,
        })?;
        let mode = meta.mode();
        let passable = mode & 0o001 != 0
            || (meta.uid() == user.uid && mode & 0o100 != 0)
            || (meta.gid() == user.gid && mode & 0o010 != 0);
        if !passable {
            return Err(EmbeddedError::NotTraversable {
                path: ancestor.to_owned(),
                user: user.name.clone(),
            });
        }
    }
    Ok(())
}
