use anyhow::Context;
use dsv4_kvstore::KvStore;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// The cache directory (the server's --kv-disk-dir).
    #[arg(long, global = true, default_value = "kvcache")]
    dir: PathBuf,
}

#[derive(clap::Subcommand)]
enum Action {
    /// One line per checkpoint: id, tokens, bytes, hits, last use.
    Ls,
    /// Remove checkpoints by id.
    Rm { ids: Vec<String> },
    /// Totals per model fingerprint.
    Stats,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if !a.dir.is_dir() {
        anyhow::bail!("{} is not a cache directory", a.dir.display());
    }
    // Inspection needs no budget: opening never evicts when the budget is unlimited.
    let store = KvStore::open(&a.dir, u64::MAX).with_context(|| format!("opening {}", a.dir.display()))?;
    for w in store.take_warnings() {
        eprintln!("warning: {}: {}", w.path.display(), w.message);
    }
    match a.action {
        Action::Ls => {
            println!("{:>9} {:>14} {:>6} {:>15}  id", "tokens", "bytes", "hits", "last used (ms)");
            for e in store.list()? {
                println!("{:>9} {:>14} {:>6} {:>15}  {}", e.tokens, e.bytes, e.hits, e.last_used_ms, e.id);
            }
        }
        Action::Rm { ids } => {
            if ids.is_empty() {
                anyhow::bail!("give the ids to remove (see `dsv4 kv ls`)");
            }
            let all = store.list()?;
            for id in ids {
                // Ids are long (model fingerprint, length, prefix hash): a unique prefix or suffix
                // is enough.
                let matches: Vec<_> = all.iter().filter(|e| e.id.starts_with(&id) || e.id.ends_with(&id)).collect();
                match matches.as_slice() {
                    [e] => {
                        store.remove(&e.id)?;
                        println!("removed {}", e.id);
                    }
                    [] => anyhow::bail!("no checkpoint id starts with {id}"),
                    _ => anyhow::bail!("{id} matches {} checkpoints; give more of the id", matches.len()),
                }
            }
        }
        Action::Stats => {
            let s = store.stats()?;
            println!("{} checkpoints, {} bytes; {} unfinished writes ({} bytes)", s.files, s.bytes, s.temp_files, s.temp_bytes);
            for (fp, (files, bytes)) in &s.by_fingerprint {
                println!("  model {}: {files} checkpoints, {bytes} bytes", &hex(fp)[..16]);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
