//! A plugin's log lines: its stdout and stderr (stdout at `info`, stderr at `warn`) and its `host.log`
//! calls, all through one [`PluginLog`] per instance with a cap on line length and on lines per second, so
//! a chatty plugin cannot flood the daemon's log, whichever way it writes and however many times it asks
//! WASI for a fresh stdout.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::bindings::Level;

/// Longest line kept; the rest of a longer line is cut.
pub const MAX_LINE: usize = 4096;
/// Lines per second a plugin may log before lines are dropped (and the drop counted).
pub const LINES_PER_SECOND: u32 = 200;

/// One instance's log: where every line it writes goes, under one rate limit.
#[derive(Clone)]
pub(crate) struct PluginLog {
    label: Arc<str>,
    window: Arc<Mutex<Window>>,
}

struct Window {
    started: Instant,
    lines: u32,
    dropped: u64,
}

impl PluginLog {
    pub(crate) fn new(label: Arc<str>) -> PluginLog {
        PluginLog {
            label,
            window: Arc::new(Mutex::new(Window { started: Instant::now(), lines: 0, dropped: 0 })),
        }
    }

    /// Logs one line at `level`, cut to [`MAX_LINE`] bytes, unless the plugin is over its rate.
    pub(crate) fn line(&self, level: Level, text: &str) {
        {
            let mut window = self.window.lock().expect("plugin log lock");
            if window.started.elapsed().as_secs() >= 1 {
                if window.dropped > 0 {
                    tracing::warn!(target: "berth.plugin", plugin = %self.label, dropped = window.dropped,
                        limit = LINES_PER_SECOND, "plugin log lines were dropped: over the rate limit");
                }
                *window = Window { started: Instant::now(), lines: 0, dropped: 0 };
            }
            if window.lines >= LINES_PER_SECOND {
                window.dropped += 1;
                return;
            }
            window.lines += 1;
        }
        let text = cut(text);
        let plugin = &*self.label;
        match level {
            Level::Trace => tracing::trace!(target: "berth.plugin", plugin, "{text}"),
            Level::Debug => tracing::debug!(target: "berth.plugin", plugin, "{text}"),
            Level::Info => tracing::info!(target: "berth.plugin", plugin, "{text}"),
            Level::Warn => tracing::warn!(target: "berth.plugin", plugin, "{text}"),
            Level::Error => tracing::error!(target: "berth.plugin", plugin, "{text}"),
        }
    }

    /// Lines dropped in the current second, for tests.
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.window.lock().unwrap().dropped
    }
}

/// `text` cut to [`MAX_LINE`] bytes at a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= MAX_LINE {
        return text;
    }
    let mut end = MAX_LINE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The `stdout`/`stderr` given to a plugin's WASI context.
pub(crate) struct GuestOutput {
    log: PluginLog,
    level: Level,
}

impl GuestOutput {
    pub(crate) fn stdout(log: PluginLog) -> GuestOutput {
        GuestOutput { log, level: Level::Info }
    }
    pub(crate) fn stderr(log: PluginLog) -> GuestOutput {
        GuestOutput { log, level: Level::Warn }
    }
    fn writer(&self) -> LineWriter {
        LineWriter { log: self.log.clone(), level: self.level, line: Vec::new() }
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

/// Splits what a plugin writes into lines.
struct LineWriter {
    log: PluginLog,
    level: Level,
    line: Vec<u8>,
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
        self.log.line(self.level, &text);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_of_writing_shares_one_rate_and_lines_are_cut() {
        let log = PluginLog::new("p@v1".into());
        let mut stdout = GuestOutput::stdout(log.clone()).writer();
        let mut fresh = GuestOutput::stderr(log.clone()).writer();
        for _ in 0..LINES_PER_SECOND / 2 {
            stdout.push(b"a\n");
            fresh.push(b"b\n");
        }
        log.line(Level::Info, "over the rate");
        assert_eq!(log.dropped(), 1, "stdout, a second stream and host.log share the budget");
        let long = "é".repeat(MAX_LINE);
        assert_eq!(cut(&long).len(), MAX_LINE);
        assert!(cut(&format!("x{long}")).len() <= MAX_LINE);
    }
}
