//! A one-line progress bar on stderr, drawn only when stderr is a terminal (never into a
//! pipe or a file), at most ten times a second.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// The bar of one run.
pub struct Progress {
    enabled: bool,
    total: u32,
    label: String,
    last: Option<Instant>,
}

impl Progress {
    /// A bar for `total` steps labelled `label`, drawn if `wanted` and stderr is a terminal.
    pub fn new(wanted: bool, total: u32, label: &str) -> Self {
        Progress {
            enabled: wanted && std::io::stderr().is_terminal(),
            total,
            label: label.to_string(),
            last: None,
        }
    }

    /// `true` when the bar is drawn.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Step `done` of `total` finished with hypergradient norm `h` and validation loss `f`.
    pub fn tick(&mut self, done: u32, h: f64, f: f64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < Duration::from_millis(100)) && done < self.total {
            return;
        }
        self.last = Some(now);
        let width = 30usize;
        let filled = (done as usize * width) / (self.total.max(1) as usize);
        let bar: String = "#".repeat(filled.min(width)) + &"-".repeat(width - filled.min(width));
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r{} [{bar}] {done}/{} |h| = {h:.3e} F = {f:.6}\x1b[K",
            self.label, self.total
        );
        let _ = e.flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[K");
            let _ = e.flush();
        }
    }
}
