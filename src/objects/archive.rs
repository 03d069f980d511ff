//! A ZIP of stored objects, written as it is sent: each object is read in chunks and each chunk goes
//! out as soon as the archive holds it, so neither the objects nor the archive are ever whole in
//! memory. Entries are stored uncompressed (model weights do not compress) with ZIP64 sizes, so any
//! size goes.
//!
//! The archive is written by the response's own stream, on the runtime, a chunk each time the client
//! takes one: a client that stops reading holds a suspended stream and at most one chunk, never a
//! thread (the connection's write timeout then closes it).

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::Objects;
use crate::domain::ObjectKey;

/// Bytes gathered before they are sent on.
const CHUNK: usize = 256 * 1024;

/// Where the ZIP writer writes: bytes waiting to be sent.
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Vec<u8>>>);

impl Written {
    fn len(&self) -> usize {
        self.0.lock().expect("archive buffer").len()
    }

    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.0.lock().expect("archive buffer")))
    }
}

impl Write for Written {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("archive buffer")
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    let objects = objects.clone();
    async_stream::stream! {
        let written = Written::default();
        let mut zip = ::zip::ZipWriter::new_stream(written.clone());
        let options = ::zip::write::SimpleFileOptions::default()
            .compression_method(::zip::CompressionMethod::Stored)
            .large_file(true);
        for (name, source) in entries {
            if let Err(e) = zip.start_file(name.as_str(), options) {
                yield Err(cut_short(anyhow::Error::new(e)));
                return;
            }
            let mut chunks = match source {
                Source::Object(key) => match objects.get_stream(&key).await {
                    Ok(stream) => stream.boxed(),
                    Err(e) => {
                        yield Err(cut_short(e));
                        return;
                    }
                },
                Source::Stream(stream) => stream
                    .map(|chunk| chunk.map_err(anyhow::Error::from))
                    .boxed(),
            };
            while let Some(chunk) = chunks.next().await {
                let added = chunk.and_then(|c| Ok(zip.write_all(&c)?));
                if let Err(e) = added {
                    yield Err(cut_short(e));
                    return;
                }
                if written.len() >= CHUNK {
                    yield Ok(written.take());
                }
            }
        }
        if let Err(e) = zip.finish() {
            yield Err(cut_short(anyhow::Error::new(e)));
            return;
        }
        let rest = written.take();
        if !rest.is_empty() {
            yield Ok(rest);
        }
    }
}

fn cut_short(error: anyhow::Error) -> std::io::Error {
    tracing::warn!(error = format!("{error:#}"), "a download was cut short");
    std::io::Error::other(format!("{error:#}"))
}
