//! Reading lines of bounded length: a line longer than the limit is skipped to its end without being
//! held in memory, and reported.

use std::io::{self, BufRead, Read};

/// One line read by [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The end of the input.
    End,
    /// A line (without its `\n`), and how many bytes it took in the input.
    Text { consumed: usize },
    /// A line longer than the limit, skipped; how many bytes it took.
    TooLong { consumed: usize },
}

/// Reads one line into `buf` (cleared first), at most `max` bytes of it.
pub fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut consumed = 0usize;
    let mut too_long = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(match (consumed, too_long) {
                (0, _) => Line::End,
                (_, true) => Line::TooLong { consumed },
                (_, false) => Line::Text { consumed },
            });
        }
        let (taken, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let content = &chunk[..if done { taken - 1 } else { taken }];
        if !too_long {
            if buf.len() + content.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(content);
            }
        }
        reader.consume(taken);
        consumed += taken;
        if done {
            return Ok(if too_long {
                Line::TooLong { consumed }
            } else {
                Line::Text { consumed }
            });
        }
    }
}

/// A reader that fails once a line runs longer than `max` bytes, naming the line: what keeps the CSV
/// parser, which buffers whole records, within bounds.
pub struct LineLimit<R> {
    inner: R,
    max: usize,
    current: usize,
    line: u64,
    /// Set once a line ran over: the bytes before it were handed out, the error comes next.
    failed: bool,
}

impl<R> LineLimit<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            current: 0,
            line: 1,
            failed: false,
        }
    }
}

/// The error a [`LineLimit`] returns.
#[derive(Debug, thiserror::Error)]
#[error("line {line} is longer than {max} bytes (KILN_MAX_LINE_BYTES)")]
pub struct LineTooLong {
    pub line: u64,
    pub max: usize,
}

impl<R: Read> Read for LineLimit<R> {
    /// Hands out the bytes before an over-long line first, so that the records before it are read, and
    /// fails on the next call.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let error = |s: &Self| {
            io::Error::other(LineTooLong {
                line: s.line,
                max: s.max,
            })
        };
        if self.failed {
            return Err(error(self));
        }
        let n = self.inner.read(out)?;
        for (i, &b) in out[..n].iter().enumerate() {
            if b == b'\n' {
                self.line += 1;
                self.current = 0;
            } else {
                self.current += 1;
                if self.current > self.max {
                    self.failed = true;
                    return if i == 0 { Err(error(self)) } else { Ok(i) };
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_skipped_and_short_ones_read() {
        let input = format!("short\n{}\nlast", "x".repeat(100));
        let mut reader = std::io::BufReader::with_capacity(16, input.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).unwrap(),
            Line::Text { consumed: 6 }
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).unwrap(),
            Line::TooLong { consumed: 101 }
        );
        assert!(buf.len() <= 10);
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).unwrap(),
            Line::Text { consumed: 4 }
        );
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut reader, &mut buf, 10).unwrap(), Line::End);
    }

    #[test]
    fn a_line_limit_names_the_long_line() {
        let input = format!("a,b\n1,2\n{}\n", "9".repeat(50));
        let mut limited = LineLimit::new(input.as_bytes(), 20);
        let mut out = Vec::new();
        let error = limited.read_to_end(&mut out).unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 3 is longer than 20 bytes (KILN_MAX_LINE_BYTES)"
        );
    }
}
