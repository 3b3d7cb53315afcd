//! Reading the weights in before the first answer, with a progress bar on a terminal.

use dsv4_gguf::GgufFile;
use std::io::IsTerminal;
use std::time::Instant;

/// Pages the model's tensor data in (see [`GgufFile::prefault`]): a bar with bytes, rate and
/// ETA on a terminal, one summary line otherwise (server logs) when it took noticeable time.
pub fn load_weights(file: &GgufFile) {
    let t = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("loading weights {bar:30} {bytes}/{total_bytes}, {bytes_per_sec}, ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let total = file.prefault(&mut |done, total| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let s = t.elapsed().as_secs_f64();
    if s > 1.0 {
        eprintln!("read {:.1} GiB of weights in {s:.1} s", total as f64 / (1u64 << 30) as f64);
    }
}
