//! Job logs: lines appended in batches, numbered per job, bounded per job.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, StoreResult, corrupt, placeholders};
use crate::domain::{LogLevel, LogLine, MAX_LOG_LINES};

fn decode(row: &AnyRow) -> StoreResult<LogLine> {
    let level: String = row.try_get("level")?;
    Ok(LogLine {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        level: LogLevel::parse(&level).ok_or_else(|| corrupt("log level", &level))?,
        message: row.try_get("message")?,
    })
}

/// `level IN (…)` for the levels at or above `min`.
fn levels_from(min: LogLevel) -> String {
    [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ]
    .into_iter()
    .filter(|l| *l >= min)
    .map(|l| format!("'{}'", l.as_str()))
    .collect::<Vec<_>>()
    .join(", ")
}

impl Store {
    /// Appends lines (`at`, level, message) to a job's log in one transaction and returns them numbered.
    /// Past [`MAX_LOG_LINES`] one last line says the log is full and the rest are dropped. Two writers
    /// that pick the same numbers collide on the key: the loser tries again.
    pub async fn append_logs(
        &self,
        job_id: &str,
        lines: &[(i64, LogLevel, String)],
    ) -> StoreResult<Vec<LogLine>> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_append_logs(job_id, lines).await {
                Err(StoreError::Other(e)) if tries < 3 && is_unique_violation(&e) => continue,
                other => return other,
            }
        }
    }

    async fn try_append_logs(
        &self,
        job_id: &str,
        lines: &[(i64, LogLevel, String)],
    ) -> StoreResult<Vec<LogLine>> {
        let mut tx = self.pool.begin().await.map_err(|e| self.note(e))?;
        self.tick()?;
        let row =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM job_logs WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.note(e))?;
        let last: i64 = row.try_get("last")?;
        if last >= MAX_LOG_LINES {
            tx.rollback().await.map_err(|e| self.note(e))?;
            return Ok(Vec::new());
        }
        let room = (MAX_LOG_LINES - last) as usize;
        let mut numbered: Vec<LogLine> = lines
            .iter()
            .take(room)
            .enumerate()
            .map(|(i, (at, level, message))| LogLine {
                seq: last + 1 + i as i64,
                at: *at,
                level: *level,
                message: message.clone(),
            })
            .collect();
        if lines.len() >= room {
            let full = numbered.last_mut().expect("room is at least 1");
            full.level = LogLevel::Warn;
            full.message =
                format!("the log is full ({MAX_LOG_LINES} lines); later lines are not kept");
        }
        self.tick()?;
        let values = (0..numbered.len())
            .map(|i| format!("($1, {})", placeholders(2 + i * 4, 4)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO job_logs (job_id, seq, at, level, message) VALUES {values}"
        )))
        .bind(job_id);
        for line in &numbered {
            insert = insert
                .bind(line.seq)
                .bind(line.at)
                .bind(line.level.as_str())
                .bind(line.message.clone());
        }
        insert.execute(&mut *tx).await.map_err(|e| self.note(e))?;
        tx.commit().await.map_err(|e| self.note(e))?;
        Ok(numbered)
    }

    /// Up to `limit` lines after `after_seq`, at `min` or above, oldest first.
    pub async fn job_logs_after(
        &self,
        job_id: &str,
        after_seq: i64,
        min: LogLevel,
        limit: i64,
    ) -> StoreResult<Vec<LogLine>> {
        self.tick()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, at, level, message FROM job_logs WHERE job_id = $1 AND seq > $2 \
             AND level IN ({}) ORDER BY seq LIMIT $3",
            levels_from(min)
        )))
        .bind(job_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        rows.iter().map(decode).collect()
    }

    /// The newest `last` lines at `min` or above, oldest first.
    pub async fn last_job_logs(
        &self,
        job_id: &str,
        min: LogLevel,
        last: i64,
    ) -> StoreResult<Vec<LogLine>> {
        self.tick()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, at, level, message FROM job_logs WHERE job_id = $1 AND level IN ({}) \
             ORDER BY seq DESC LIMIT $2",
            levels_from(min)
        )))
        .bind(job_id)
        .bind(last)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.note(e))?;
        let mut lines = rows.iter().map(decode).collect::<StoreResult<Vec<_>>>()?;
        lines.reverse();
        Ok(lines)
    }
}

fn is_unique_violation(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .is_some_and(|e| e.is_unique_violation())
}
