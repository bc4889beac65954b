//! A private PostgreSQL for when no `DATABASE_URL` is given, so that the service runs on a fresh
//! machine with no setup. It uses the PostgreSQL binaries installed on the machine, keeps its
//! cluster under the data directory, and listens on a Unix socket only (no port to collide with).
//!
//! The server lives only as long as the processes that use it (the service, and commands such as
//! `hotline tokens create` run beside it). Each holds a shared lock on `users.lock` while it does,
//! and the last to let go stops the server. A process that is killed cannot stop anything, so each
//! also starts a *lifeline*: a shell reading a pipe that only this process writes to. However the
//! process ends, `kill -9` included, the kernel closes the pipe, and the lifeline then stops the
//! server unless another process still uses it. Should the lifeline be killed too, the server is
//! found running with no user at the next start (its `postmaster.pid` says it runs, and nobody
//! holds `users.lock`): that process adopts it, and stops it when it is done.
//!
//! `initdb` refuses to run as root, so as root the cluster is owned and run by an unprivileged
//! account (`postgres` if it exists, else `nobody`), which std's `CommandExt::uid` switches to
//! without any unsafe code.

use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

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
/// Held exclusively while a process starts, adopts or stops the server.
const START_LOCK: &str = "start.lock";
/// Held shared by every process that uses the server.
const USERS_LOCK: &str = "users.lock";

/// The lifeline, run by `sh -c` with the cluster's root, `pg_ctl` and the cluster directory as
/// `$0`, `$1` and `$2`. It ignores the signals a terminal or a service manager sends to a whole
/// group (its process stops the server itself then), waits for the end of its input, and stops
/// the server if no process uses it any more. Waiting a moment for `users.lock` lets the kernel
/// release the lock of a process that was just killed.
const LIFELINE: &str = r#"trap '' HUP INT QUIT TERM
while read -r _; do :; done
exec flock "$0/start.lock" flock -w 2 "$0/users.lock" "$1" stop -D "$2" -m fast -w"#;

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

/// The private cluster on disk, and how to drive it.
#[derive(Debug)]
struct Cluster {
    bin_dir: PathBuf,
    /// `data_dir/postgres`: the cluster, its socket, its log and the locks.
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<RunAs>,
}

/// This process's use of the private PostgreSQL, which runs until its last user is done.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster: Cluster,
    /// This process's shared lock on `users.lock`. Declared before the lifeline, so that when the
    /// two are dropped the lock is released first and the lifeline finds this process gone.
    user: File,
    /// Stops the server after this process if it ends without `stop`.
    lifeline: std::process::Child,
}

impl EmbeddedPostgres {
    /// Starts the cluster under `data_dir/postgres` (creating it on first use), or joins the
    /// process already running it, or adopts a server that a killed process left running; then
    /// makes sure the service's database exists.
    pub async fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let cluster = Cluster::prepare(data_dir)?;
        // Several processes may start at once (two services, or a test runner's processes):
        // one initialises and starts the cluster while the others wait, then find it running.
        let starting = lock(&cluster.path(START_LOCK)).await?;
        cluster.grant_access()?;
        if !cluster.data.join("PG_VERSION").exists() {
            cluster.init().await?;
        }
        let user = open(&cluster.path(USERS_LOCK))?;
        let running = cluster.is_running().await;
        if running {
            match user.try_lock() {
                Ok(()) => tracing::warn!(
                    postmaster_pid = cluster.postmaster_pid(),
                    "adopting the embedded PostgreSQL that a killed process left running; \
                     it stops when this process is done with it"
                ),
                Err(TryLockError::WouldBlock) => {
                    tracing::info!("using the embedded PostgreSQL that another process runs");
                }
                Err(TryLockError::Error(source)) => return Err(cluster.io(USERS_LOCK, source)),
            }
        }
        user.lock_shared()
            .map_err(|source| cluster.io(USERS_LOCK, source))?;
        let lifeline = cluster.lifeline()?;
        let pg = Self {
            cluster,
            user,
            lifeline,
        };
        let started = if running {
            Ok(())
        } else {
            pg.cluster.start().await
        };
        drop(starting);
        let ready = match started {
            Ok(()) => pg.cluster.create_database().await,
            Err(error) => Err(error),
        };
        match ready {
            Ok(()) => Ok(pg),
            Err(error) => {
                if let Err(stop) = pg.stop().await {
                    tracing::warn!(error = %stop, "could not stop the embedded PostgreSQL");
                }
                Err(error)
            }
        }
    }

    /// How to connect to the service's database.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.cluster.options_for(DATABASE)
    }

    /// Lets go of the server, and stops it if no other process uses it.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        // This process stops the server itself: its lifeline has nothing left to do.
        let _ = self.lifeline.kill();
        let _ = self.lifeline.wait();
        let _stopping = lock(&self.cluster.path(START_LOCK)).await?;
        let last = match self.user.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(source)) => return Err(self.cluster.io(USERS_LOCK, source)),
        };
        if last && self.cluster.is_running().await {
            self.cluster.stop().await?;
        }
        Ok(())
    }
}

impl Cluster {
    /// Finds the binaries and the account to run as, and creates the directories.
    fn prepare(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let bin_dir = find_binaries().ok_or(EmbeddedError::BinariesNotFound)?;
        let root = absolute(&data_dir.join("postgres"))?;
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
        Ok(Self {
            bin_dir,
            data: root.join("data"),
            root,
            socket_dir,
            run_as,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn io(&self, name: &str, source: std::io::Error) -> EmbeddedError {
        EmbeddedError::Io {
            path: self.path(name),
            source,
        }
    }

    /// As root, hands the cluster's directories to the account PostgreSQL runs as.
    fn grant_access(&self) -> Result<(), EmbeddedError> {
        let Some(user) = &self.run_as else {
            return Ok(());
        };
        check_traversable(&self.root, user)?;
        for dir in [&self.root, &self.socket_dir] {
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).map_err(|source| {
                EmbeddedError::Io {
                    path: dir.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    fn options_for(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// The server's process id, from its `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<u32> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        pid_file.lines().next()?.trim().parse().ok()
    }

    async fn init(&self) -> Result<(), EmbeddedError> {
        let data = self.data.display().to_string();
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

    /// Whether a server runs on the cluster: `pg_ctl status` reads its `postmaster.pid` and
    /// checks that the process it names is alive.
    async fn is_running(&self) -> bool {
        let data = self.data.display().to_string();
        self.run("pg_ctl status", "pg_ctl", &["status", "-D", &data])
            .await
            .is_ok()
    }

    async fn start(&self) -> Result<(), EmbeddedError> {
        let data = self.data.display().to_string();
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -p {PORT}",
            self.socket_dir.display()
        );
        let log = self.path("postgres.log").display().to_string();
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

    async fn stop(&self) -> Result<(), EmbeddedError> {
        let data = self.data.display().to_string();
        self.run(
            "pg_ctl stop",
            "pg_ctl",
            &["stop", "-D", &data, "-m", "fast", "-w"],
        )
        .await
        .map(|_| ())
    }

    /// Starts this process's lifeline (see the module's documentation).
    fn lifeline(&self) -> Result<std::process::Child, EmbeddedError> {
        let mut command = std::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(LIFELINE)
            .arg(&self.root)
            .arg(self.bin_dir.join("pg_ctl"))
            .arg(&self.data)
            .env("LC_ALL", "C")
            // `flock` is util-linux's; it is found where the system keeps it even with no PATH.
            .env("PATH", with_system_path(std::env::var_os("PATH")))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = &self.run_as {
            command.uid(user.uid).gid(user.gid).current_dir("/");
        }
        command.spawn().map_err(|e| EmbeddedError::Command {
            step: "starting the embedded PostgreSQL's lifeline",
            detail: e.to_string(),
        })
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

/// `path` followed by the system's own directories.
fn with_system_path(path: Option<std::ffi::OsString>) -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/bin"].map(PathBuf::from));
    std::env::join_paths(dirs).unwrap_or_else(|_| "/usr/bin:/bin".into())
}

/// Opens (creating it if need be) a lock file, not yet locked.
fn open(path: &Path) -> Result<File, EmbeddedError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| EmbeddedError::Io {
            path: path.to_owned(),
            source,
        })
}

/// An exclusive lock on `path`, held until the returned file is dropped.
async fn lock(path: &Path) -> Result<File, EmbeddedError> {
    let file = open(path)?;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        file.lock()
            .map(|()| file)
            .map_err(|source| EmbeddedError::Io { path, source })
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
