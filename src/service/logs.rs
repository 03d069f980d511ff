//! Job logs: what the runner did, line by line. Lines are written to the database in batches by a
//! writer task ([`JobLog`]) and published after they are stored; `follow_job_logs` replays the stored
//! lines and then follows new ones with no gap and no repeat; a job's log downloads as a ZIP.
//!
//! Bounded: [`MAX_LOG_LINES`] lines per job, each at most [`crate::domain::MAX_LOG_LINE_CHARS`]
//! characters.

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};

use super::downloads::Download;
use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    FieldError, LogLevel, LogLine, MAX_LOG_LINES, abbreviate, is_plausible_id, now_ms,
};
use crate::events::JobEvent;
use crate::objects::archive;

/// Lines one `Job.logs` read returns at most.
pub const MAX_LOG_READ: i64 = 1000;
/// Lines a catch-up or a download reads per round trip.
const PAGE: i64 = 1000;

enum Message {
    Line(i64, LogLevel, String),
    Flush(oneshot::Sender<()>),
}

/// A job's log as the code running the job writes it: lines are queued at once and stored in batches.
pub struct JobLog {
    tx: mpsc::UnboundedSender<Message>,
    writer: tokio::task::JoinHandle<()>,
}

impl JobLog {
    pub fn line(&self, level: LogLevel, message: impl AsRef<str>) {
        let message = LogLine::clip(message.as_ref());
        let _ = self.tx.send(Message::Line(now_ms(), level, message));
    }

    pub fn info(&self, message: impl AsRef<str>) {
        self.line(LogLevel::Info, message);
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        self.line(LogLevel::Warn, message);
    }

    /// Waits until every line queued so far is stored (or given up on).
    #[tracing::instrument(skip_all)]
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Stores what is queued and stops the writer.
    #[tracing::instrument(skip_all)]
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.writer.await;
    }
}

impl Service {
    /// Starts the writer of a job's log.
    pub fn job_log(&self, job_id: &str) -> JobLog {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let service = self.clone();
        let job_id = job_id.to_string();
        let writer = tokio::spawn(async move {
            let mut open = true;
            while open {
                let mut batch = Vec::new();
                let mut acks = Vec::new();
                match rx.recv().await {
                    Some(Message::Line(at, level, message)) => batch.push((at, level, message)),
                    Some(Message::Flush(ack)) => acks.push(ack),
                    None => break,
                }
                // Whatever else is queued goes in the same write.
                while batch.len() < 500 {
                    match rx.try_recv() {
                        Ok(Message::Line(at, level, message)) => batch.push((at, level, message)),
                        Ok(Message::Flush(ack)) => acks.push(ack),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                service.store_log_lines(&job_id, &batch).await;
                for ack in acks {
                    let _ = ack.send(());
                }
            }
        });
        JobLog { tx, writer }
    }

    /// Stores lines of a job's log and publishes them; a failure is logged and the lines are lost
    /// (a log never holds up the job).
    async fn store_log_lines(&self, job_id: &str, lines: &[(i64, LogLevel, String)]) {
        if lines.is_empty() {
            return;
        }
        let mut tries = 0;
        loop {
            tries += 1;
            match self.store.append_logs(job_id, lines).await {
                Ok(stored) => {
                    if !stored.is_empty() {
                        self.events.publish(job_id, JobEvent::Logs(stored));
                    }
                    return;
                }
                Err(e) if tries < 3 => {
                    tracing::debug!(job_id, error = %e, "writing the job's log failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::warn!(job_id, error = %e, lines = lines.len(), "lines of the job's log were lost");
                    return;
                }
            }
        }
    }

    /// Writes one line of a job's log now (a job's end, its claim), before what follows is published.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn log_now(&self, job_id: &str, level: LogLevel, message: impl AsRef<str>) {
        let line = (now_ms(), level, LogLine::clip(message.as_ref()));
        self.store_log_lines(job_id, &[line]).await;
    }

    async fn logged_job(&self, job_id: &str) -> ServiceResult<crate::domain::JobRecord> {
        let missing =
            || ServiceError::NotFound(format!("no job with id {}", abbreviate(job_id, 100)));
        if !is_plausible_id(job_id) {
            return Err(missing());
        }
        self.store.get_job(job_id).await?.ok_or_else(missing)
    }

    /// The newest `last` lines (1–[`MAX_LOG_READ`]) at `level` or above, oldest first.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn job_logs(
        &self,
        job_id: &str,
        last: i64,
        level: LogLevel,
    ) -> ServiceResult<Vec<LogLine>> {
        if !(1..=MAX_LOG_READ).contains(&last) {
            return Err(FieldError::new("last", format!("must be 1 to {MAX_LOG_READ}")).into());
        }
        Ok(self.store.last_job_logs(job_id, level, last).await?)
    }

    /// Every stored line at `level` or above, then new ones as they are written, until the job ends.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn follow_job_logs(
        &self,
        job_id: &str,
        level: LogLevel,
    ) -> ServiceResult<impl Stream<Item = LogLine> + use<>> {
        // Subscribed before reading: lines written in between arrive live and are dropped as repeats.
        let mut rx = self.events.subscribe();
        let job = self.logged_job(job_id).await?;
        let store = self.store.clone();
        let id = job.id.clone();
        Ok(async_stream::stream! {
            let mut last = 0i64;
            let mut ended = job.status.is_terminal();
            loop {
                // Catch up from the store: everything after `last`.
                loop {
                    let Ok(page) = store.job_logs_after(&id, last, LogLevel::Debug, PAGE).await else {
                        return;
                    };
                    let full = page.len() as i64 == PAGE;
                    for line in page {
                        last = line.seq;
                        if line.level >= level {
                            yield line;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                if ended || last >= MAX_LOG_LINES {
                    return;
                }
                // Follow live until a gap (catch up again) or the job's end (a last catch-up).
                loop {
                    let lines = match rx.recv().await {
                        Ok(envelope) if envelope.event == JobEvent::Resync => break,
                        Ok(envelope) if envelope.job_id != id => continue,
                        Ok(envelope) => match &envelope.event {
                            JobEvent::Logs(lines) => lines.clone(),
                            JobEvent::StatusChanged { status, .. } if status.is_terminal() => {
                                ended = true;
                                break;
                            }
                            _ => continue,
                        },
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    };
                    if lines.first().is_some_and(|l| l.seq > last + 1) {
                        break;
                    }
                    for line in lines {
                        if line.seq > last {
                            last = line.seq;
                            if line.level >= level {
                                yield line;
                            }
                        }
                    }
                }
            }
        })
    }

    /// A job's whole log as a ZIP holding `<job id>.log`: one line each, `time LEVEL message`.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn download_job_logs(&self, job_id: &str) -> ServiceResult<Download> {
        let job = self.logged_job(job_id).await?;
        let store = self.store.clone();
        let id = job.id.clone();
        let text = async_stream::stream! {
            let mut last = 0i64;
            loop {
                let page = match store.job_logs_after(&id, last, LogLevel::Debug, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        yield Err(std::io::Error::other(format!("reading the job's log: {e}")));
                        return;
                    }
                };
                let full = page.len() as i64 == PAGE;
                let mut chunk = String::new();
                for line in page {
                    last = line.seq;
                    chunk.push_str(&format!(
                        "{} {:<5} {}\n",
                        crate::domain::timestamp(line.at),
                        line.level.as_str(),
                        line.message.replace('\n', "\n    ")
                    ));
                }
                yield Ok(bytes::Bytes::from(chunk));
                if !full {
                    return;
                }
            }
        };
        let entries = vec![(
            format!("{}.log", job.id),
            archive::Source::Stream(Box::pin(text)),
        )];
        Ok(Download {
            file_name: format!("job-{}-logs.zip", job.id),
            content_type: "application/zip",
            size: None,
            body: Box::pin(archive::zip(&self.objects, entries)),
        })
    }
}

/// Where a job's log ZIP is served, relative to the API's address.
pub fn job_logs_path(job_id: &str) -> String {
    format!("/jobs/{job_id}/logs/download")
}
