//! Progress reports handed to the caller's callback, and a plain stderr renderer
//! the CLI can use as is.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What the downloader is doing when it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Asking the server for the file's size and checksum.
    Connecting,
    /// Re-reading an existing `.part` to seed the running SHA-256 before resuming.
    HashingPart,
    /// Receiving bytes.
    Downloading,
    /// Checking an already complete file against its checksum.
    Verifying,
    /// The file is in place (downloaded now, or found already there).
    Done,
}

/// One progress report. `done`/`total` count bytes of the whole file, so a
/// resumed download starts at `resumed_from`, not at zero.
#[derive(Clone, Debug)]
pub struct Progress {
    pub file: String,
    pub phase: Phase,
    pub done: u64,
    pub total: Option<u64>,
    /// Bytes already on disk when this transfer started.
    pub resumed_from: u64,
    /// Recent rate over the last few seconds, bytes per second (0 until measured).
    pub bytes_per_sec: f64,
    /// Time left at the recent rate, when both the rate and the total are known.
    pub eta: Option<Duration>,
    /// Time since this phase started.
    pub elapsed: Duration,
}

/// Rate over a sliding window: a whole-run average would hide a stall and
/// an instantaneous one jumps around with every read.
pub(crate) struct RateMeter {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    pub(crate) fn new(window: Duration) -> Self {
        RateMeter {
            window,
            samples: VecDeque::new(),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.samples.clear();
    }

    /// Record that `done` bytes were reached at `now`; returns bytes per second.
    pub(crate) fn record(&mut self, now: Instant, done: u64) -> f64 {
        self.samples.push_back((now, done));
        while let Some(&(t, _)) = self.samples.front() {
            if now.duration_since(t) > self.window && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let (t0, b0) = self.samples[0];
        let dt = now.duration_since(t0).as_secs_f64();
        if dt <= 0.0 || done < b0 {
            return 0.0;
        }
        (done - b0) as f64 / dt
    }
}

pub(crate) fn eta(done: u64, total: Option<u64>, rate: f64) -> Option<Duration> {
    let total = total?;
    if rate <= 0.0 || !rate.is_finite() {
        return None;
    }
    let left = total.saturating_sub(done) as f64;
    Some(Duration::from_secs_f64(left / rate))
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `3725s` → `1h02m05s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// One status line, e.g.
/// `downloading x.gguf: 12.3 GiB / 80.8 GiB (15.2%), 95.1 MiB/s, ETA 12m10s`.
pub fn format_progress(p: &Progress) -> String {
    let verb = match p.phase {
        Phase::Connecting => return format!("connecting for {}", p.file),
        Phase::HashingPart => "checking partial",
        Phase::Downloading => "downloading",
        Phase::Verifying => "verifying",
        Phase::Done => "done",
    };
    let mut s = format!("{verb} {}: {}", p.file, human_bytes(p.done));
    if let Some(t) = p.total {
        let pct = if t == 0 {
            100.0
        } else {
            p.done as f64 * 100.0 / t as f64
        };
        s.push_str(&format!(" / {} ({pct:.1}%)", human_bytes(t)));
    }
    if p.phase != Phase::Done && p.bytes_per_sec > 0.0 {
        s.push_str(&format!(", {}/s", human_bytes(p.bytes_per_sec as u64)));
        if let Some(e) = p.eta {
            s.push_str(&format!(", ETA {}", human_duration(e)));
        }
    }
    s
}

/// Draws [`format_progress`] on one updating stderr line when stderr is a
/// terminal, and stays silent otherwise (logs and pipes get no carriage-return
/// noise; the CLI prints its own final line).
pub struct TerminalProgress {
    enabled: bool,
    last_len: usize,
    drew: bool,
}

impl TerminalProgress {
    /// Enabled only when stderr is a terminal.
    pub fn stderr() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    pub fn new(enabled: bool) -> Self {
        TerminalProgress {
            enabled,
            last_len: 0,
            drew: false,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        if !self.enabled {
            return;
        }
        let line = format_progress(p);
        let pad = self.last_len.saturating_sub(line.chars().count());
        // Errors writing a progress line are not worth failing a download over.
        let _ = write!(std::io::stderr(), "\r{line}{:pad$}", "");
        let _ = std::io::stderr().flush();
        self.last_len = line.chars().count();
        self.drew = true;
    }

    /// End the updating line so later output starts on a fresh one.
    pub fn finish(&mut self) {
        if self.enabled && self.drew {
            let _ = writeln!(std::io::stderr());
            self.drew = false;
            self.last_len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_uses_recent_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(Duration::from_secs(5));
        assert_eq!(m.record(t0, 0), 0.0);
        let r = m.record(t0 + Duration::from_secs(2), 2_000_000);
        assert!((r - 1_000_000.0).abs() < 1.0, "{r}");
        // After a long stall only the recent samples count, so the rate drops.
        m.record(t0 + Duration::from_secs(20), 2_000_000);
        let r = m.record(t0 + Duration::from_secs(21), 2_000_000);
        assert!(r < 200_000.0, "{r}");
    }

    #[test]
    fn eta_and_format() {
        assert_eq!(eta(50, Some(150), 10.0), Some(Duration::from_secs(10)));
        assert_eq!(eta(50, None, 10.0), None);
        assert_eq!(eta(50, Some(150), 0.0), None);
        let p = Progress {
            file: "m.gguf".into(),
            phase: Phase::Downloading,
            done: 3 * 1024 * 1024 * 1024,
            total: Some(12 * 1024 * 1024 * 1024),
            resumed_from: 0,
            bytes_per_sec: 100.0 * 1024.0 * 1024.0,
            eta: Some(Duration::from_secs(3725)),
            elapsed: Duration::from_secs(1),
        };
        assert_eq!(
            format_progress(&p),
            "downloading m.gguf: 3.0 GiB / 12.0 GiB (25.0%), 100.0 MiB/s, ETA 1h02m05s"
        );
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
