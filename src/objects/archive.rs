//! A ZIP of stored objects, written as it is sent: each object is read in chunks and each chunk goes
//! out as soon as the archive holds it, so neither the objects nor the archive are ever whole in
//! memory. Entries are stored uncompressed (model weights do not compress) with ZIP64 sizes, so any
//! size goes.

use std::io::Write;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::Objects;
use crate::domain::ObjectKey;

/// Bytes gathered before they are sent on.
const CHUNK: usize = 256 * 1024;

/// Sends what the ZIP writer writes to the response, in chunks; fails once the receiver is gone (the
/// client went away), which stops the writing.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// What an archive entry holds: a stored object, or bytes made as they are read.
pub enum Source {
    Object(ObjectKey),
    Stream(std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>),
}

/// The ZIP of `entries` (name in the archive, what it holds) as a stream of chunks. A failure while reading an
/// object ends the stream with that error (the client sees a cut download, never a wrong one).
pub fn zip(
    objects: &Objects,
    entries: Vec<(String, Source)>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel(4);
    let objects = objects.clone();
    let runtime = tokio::runtime::Handle::current();
    let errors = tx.clone();
    tokio::task::spawn_blocking(move || {
        let written = (|| -> anyhow::Result<()> {
            let mut zip = ::zip::ZipWriter::new_stream(ChannelWriter {
                tx,
                buffer: Vec::with_capacity(CHUNK),
            });
            let options = ::zip::write::SimpleFileOptions::default()
                .compression_method(::zip::CompressionMethod::Stored)
                .large_file(true);
            for (name, source) in entries {
                zip.start_file(name.as_str(), options)?;
                let mut chunks = match source {
                    Source::Object(key) => Box::pin(runtime.block_on(objects.get_stream(&key))?),
                    Source::Stream(stream) => stream
                        .map(|chunk| chunk.map_err(anyhow::Error::from))
                        .boxed(),
                };
                while let Some(chunk) = runtime.block_on(chunks.next()) {
                    zip.write_all(&chunk?)?;
                }
            }
            zip.finish()?.flush()?;
            Ok(())
        })();
        if let Err(e) = written {
            tracing::warn!(error = format!("{e:#}"), "a download was cut short");
            let _ = errors.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
