//! The engine's state: one SQLite database in WAL mode (`<root>/hako.db`),
//! shared by every `hako` process at once. Writes are short IMMEDIATE
//! transactions with a busy timeout, so many commands in parallel queue
//! instead of failing with "database is locked".

use crate::error::{Error, Result};
use crate::{Container, ContainerConfig, Status};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::time::Duration;

pub struct Db {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    image_id TEXT NOT NULL,
    created TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER NOT NULL DEFAULT 0,
    monitor_pid INTEGER NOT NULL DEFAULT 0,
    monitor_start INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL DEFAULT '',
    finished_at TEXT NOT NULL DEFAULT '',
    exit_code INTEGER NOT NULL DEFAULT 0,
    restart_count INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT ''
);
";

/// Raised whenever a table is added or changed.
const SCHEMA_VERSION: i64 = 3;

fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Makes (or upgrades) the database: WAL mode, the tables, the version.
/// Many commands may start on a new store at once (forty `run -d`):
/// turning on WAL and the first DDL can fail with "database is locked" at
/// once, without waiting, when they race. So the first-time work goes
/// under a file lock, and only one process does it.
fn init(root: &Path, conn: &Connection) -> Result<()> {
    let path = root.join("hako.db.init-lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    lock.lock()
        .map_err(|e| Error::io(format!("lock {}", path.display()), e))?;
    let db = root.join("hako.db");
    if schema_version(conn).map_err(|e| Error::db(&db, e))? >= SCHEMA_VERSION {
        return Ok(());
    }
    // WAL lets readers go on beside one writer, and is kept in the file.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| Error::db(&db, e))?;
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} {} {} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
        crate::volumes::SCHEMA,
        crate::networks::SCHEMA
    ))
    .map_err(|e| Error::db(&db, e))
}

const COLUMNS: &str = "id, name, image, image_id, created, config, status, pid, monitor_pid, \
     monitor_start, started_at, finished_at, exit_code, restart_count, error";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Container, String)> {
    let status: String = r.get(6)?;
    Ok((
        Container {
            id: r.get(0)?,
            name: r.get(1)?,
            image: r.get(2)?,
            image_id: r.get(3)?,
            created: r.get(4)?,
            config: ContainerConfig::default(),
            status: Status::parse(&status),
            pid: r.get(7)?,
            monitor_pid: r.get(8)?,
            monitor_start: r.get::<_, i64>(9)?.try_into().unwrap_or(0),
            started_at: r.get(10)?,
            finished_at: r.get(11)?,
            exit_code: r.get(12)?,
            restart_count: r.get::<_, i64>(13)?.try_into().unwrap_or(0),
            error: r.get(14)?,
        },
        r.get(5)?,
    ))
}

fn finish(pair: (Container, String)) -> Result<Container> {
    let (mut c, config) = pair;
    c.config = serde_json::from_str(&config)
        .map_err(|e| Error::Corrupt(format!("container {}: config: {e}", c.id)))?;
    Ok(c)
}

/// Writes the state columns of `c` (for [`Db::insert`] and [`Db::update`]).
fn write_state(conn: &Connection, c: &Container) -> Result<()> {
    let n = conn
        .execute(
            "UPDATE containers SET status = ?2, pid = ?3, monitor_pid = ?4, monitor_start = ?5, \
             started_at = ?6, finished_at = ?7, exit_code = ?8, restart_count = ?9, error = ?10 WHERE id = ?1",
            params![
                c.id,
                c.status.as_str(),
                c.pid,
                c.monitor_pid,
                i64::try_from(c.monitor_start).unwrap_or(0),
                c.started_at,
                c.finished_at,
                c.exit_code,
                i64::from(c.restart_count),
                c.error
            ],
        )
        .map_err(Error::sql)?;
    if n == 0 {
        return Err(Error::NotFound(format!("no such container: {}", c.id)));
    }
    Ok(())
}

impl Db {
    pub fn open(root: &Path) -> Result<Db> {
        let path = root.join("hako.db");
        let conn = Connection::open(&path).map_err(|e| Error::db(&path, e))?;
        conn.busy_timeout(Duration::from_secs(60))
            .map_err(|e| Error::db(&path, e))?;
        // NORMAL sync in WAL mode is durable at each checkpoint and
        // consistent always.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| Error::db(&path, e))?;
        // Every `hako` command opens and closes the database; a checkpoint
        // (with two fsyncs) at each close would cost more than the
        // command's own work. SQLite checkpoints as the WAL grows instead,
        // and early: a command that finds no other connection open reads
        // the whole WAL to rebuild its index (~1 ms for SQLite's default
        // 1000 pages), so the WAL is kept to 64 pages.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(|e| Error::db(&path, e))?;
        conn.pragma_update(None, "wal_autocheckpoint", 64)
            .map_err(|e| Error::db(&path, e))?;
        if schema_version(&conn).map_err(|e| Error::db(&path, e))? < SCHEMA_VERSION {
            init(root, &conn)?;
        }
        Ok(Db { conn })
    }

    /// For the other objects' modules (volumes), which keep their own
    /// tables in this database.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Adds a container; a taken name is an error that says so.
    pub fn insert(&mut self, c: &Container) -> Result<()> {
        let config = serde_json::to_string(&c.config).map_err(|e| Error::Corrupt(e.to_string()))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::sql)?;
        let res = tx.execute(
            "INSERT INTO containers (id, name, image, image_id, created, config, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                c.id,
                c.name,
                c.image,
                c.image_id,
                c.created,
                config,
                c.status.as_str()
            ],
        );
        match res {
            Ok(_) => {
                write_state(&tx, c)?;
            }
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                let holder: Option<String> = tx
                    .query_row(
                        "SELECT id FROM containers WHERE name = ?1",
                        [&c.name],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(Error::sql)?;
                return Err(Error::Conflict(format!(
                    "the container name \"/{}\" is already in use by container {}; remove that container or choose another name",
                    c.name,
                    holder.unwrap_or_default()
                )));
            }
            Err(e) => return Err(Error::sql(e)),
        }
        tx.commit().map_err(Error::sql)
    }

    /// Writes the state columns of `c` (never its name or config: those
    /// change only through [`Db::rename`] and [`Db::update_config`], so a
    /// state written from an older read cannot undo them).
    pub fn update(&mut self, c: &Container) -> Result<()> {
        write_state(&self.conn, c)
    }

    /// Gives a container a new name; a taken one is refused.
    pub fn rename(&mut self, id: &str, name: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE containers SET name = ?2 WHERE id = ?1",
                params![id, name],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Error::Conflict(format!("the container name \"/{name}\" is already in use"))
                }
                e => Error::sql(e),
            })?;
        Ok(())
    }

    /// Replaces a container's configuration (`update`).
    pub fn update_config(&mut self, c: &Container) -> Result<()> {
        let config = serde_json::to_string(&c.config).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.conn
            .execute(
                "UPDATE containers SET config = ?2 WHERE id = ?1",
                params![c.id, config],
            )
            .map_err(Error::sql)?;
        Ok(())
    }

    pub fn delete(&mut self, id: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM containers WHERE id = ?1", [id])
            .map_err(Error::sql)?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<Container>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM containers WHERE id = ?1"),
                [id],
                row,
            )
            .optional()
            .map_err(Error::sql)?
            .map(finish)
            .transpose()
    }

    /// A container by full id, name, or unique id prefix (Docker's order).
    pub fn lookup(&self, what: &str) -> Result<Container> {
        let what = what.strip_prefix('/').unwrap_or(what);
        if let Some(c) = self.get(what)? {
            return Ok(c);
        }
        let by_name = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM containers WHERE name = ?1"),
                [what],
                row,
            )
            .optional()
            .map_err(Error::sql)?;
        if let Some(pair) = by_name {
            return finish(pair);
        }
        let no_such = || Error::NotFound(format!("no such container: {what}"));
        if what.is_empty() || !what.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(no_such());
        }
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM containers WHERE substr(id, 1, ?2) = ?1 LIMIT 2"
            ))
            .map_err(Error::sql)?;
        let found: Vec<(Container, String)> = stmt
            .query_map(params![what, i64::try_from(what.len()).unwrap_or(0)], row)
            .map_err(Error::sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::sql)?;
        match found.len() {
            0 => Err(no_such()),
            1 => found
                .into_iter()
                .next()
                .map(finish)
                .unwrap_or_else(|| Err(no_such())),
            _ => Err(Error::Invalid(format!(
                "multiple containers match {what:?}; give more of the id"
            ))),
        }
    }

    /// Every container, newest first.
    pub fn all(&self) -> Result<Vec<Container>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM containers ORDER BY created DESC, rowid DESC"
            ))
            .map_err(Error::sql)?;
        let rows: Vec<(Container, String)> = stmt
            .query_map([], row)
            .map_err(Error::sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::sql)?;
        rows.into_iter().map(finish).collect()
    }
}
