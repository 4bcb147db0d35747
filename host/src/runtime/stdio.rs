//! A plugin's stdout and stderr, forwarded to the daemon's log line by line (stdout at `info`, stderr at
//! `warn`), with a cap on line length and on lines per second so a chatty plugin cannot flood the log.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept; the rest of a longer line is cut.
const MAX_LINE: usize = 4096;
/// Lines per second a plugin may log before lines are dropped (and the drop counted).
const LINES_PER_SECOND: u32 = 200;

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// The `stdout`/`stderr` given to a plugin's WASI context.
pub(crate) struct GuestOutput {
    label: Arc<str>,
    stream: Stream,
}

impl GuestOutput {
    pub(crate) fn stdout(label: Arc<str>) -> GuestOutput {
        GuestOutput { label, stream: Stream::Stdout }
    }
    pub(crate) fn stderr(label: Arc<str>) -> GuestOutput {
        GuestOutput { label, stream: Stream::Stderr }
    }
    fn writer(&self) -> LineWriter {
        LineWriter {
            label: self.label.clone(),
            stream: self.stream,
            line: Vec::new(),
            window: Instant::now(),
            in_window: 0,
            dropped: 0,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }
}

struct LineWriter {
    label: Arc<str>,
    stream: Stream,
    line: Vec<u8>,
    window: Instant,
    in_window: u32,
    dropped: u64,
}

impl LineWriter {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        if self.window.elapsed().as_secs() >= 1 {
            if self.dropped > 0 {
                tracing::warn!(target: "berth.plugin", plugin = %self.label, dropped = self.dropped,
                    "plugin output was rate-limited");
            }
            self.window = Instant::now();
            self.in_window = 0;
            self.dropped = 0;
        }
        if self.in_window >= LINES_PER_SECOND {
            self.dropped += 1;
            return;
        }
        self.in_window += 1;
        match self.stream {
            Stream::Stdout => tracing::info!(target: "berth.plugin", plugin = %self.label, "{text}"),
            Stream::Stderr => tracing::warn!(target: "berth.plugin", plugin = %self.label, "{text}"),
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
