//! `dsv4 chat` and `dsv4 test-vectors` end to end on the demo model (its text is noise; the
//! tests check behaviour: rendering, reuse, flags, output shapes).

use std::process::{Command, Output};

fn dsv4(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dsv4"));
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn trace_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn one_shot_pipes_cleanly_and_is_reproducible() {
    let args = ["chat", "--demo", "-p", "Say something.", "--temp", "0", "-n", "12", "--nothink"];
    let a = dsv4(&args, &[]);
    assert!(a.status.success(), "{}", text(&a.stderr));
    let out = text(&a.stdout);
    assert!(!out.contains('\x1b'), "no terminal escapes when piped: {out:?}");
    assert!(text(&a.stderr).contains("generated 12 tokens") || text(&a.stderr).contains("end of turn"), "{}", text(&a.stderr));
    assert!(text(&a.stderr).contains("memory plan at ctx 32768"));
    let b = dsv4(&args, &[]);
    assert_eq!(a.stdout, b.stdout, "greedy output is deterministic");
    let s1 = dsv4(&["chat", "--demo", "-p", "x", "--temp", "1", "--seed", "5", "-n", "8", "--nothink"], &[]);
    let s2 = dsv4(&["chat", "--demo", "-p", "x", "--temp", "1", "--seed", "5", "-n", "8", "--nothink"], &[]);
    assert_eq!(s1.stdout, s2.stdout, "a seed makes sampling reproducible");
}

#[test]
fn thinking_flags_and_system_prompt_shape_the_rendered_prompt() {
    let d = tmp();
    let trace = d.path().join("t.jsonl");
    let t = trace.to_str().unwrap();
    for (flag, ends) in [("--nothink", "<｜Assistant｜></think>"), ("--think", "<think>")] {
        let o = dsv4(&["chat", "--demo", "-p", "Hi", "-n", "2", "--system", "Be brief.", flag, "--trace", t], &[]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let ev = trace_events(&trace);
        let rendered = ev.iter().rev().find(|e| e["event"] == "prompt").unwrap()["rendered"].as_str().unwrap().to_string();
        assert!(rendered.ends_with(ends), "{flag}: {rendered:?}");
        assert!(rendered.contains("Be brief."));
        assert!(ev.iter().any(|e| e["event"] == "cache"));
        assert!(ev.iter().any(|e| e["event"] == "generated"));
    }
    // Think Max needs a context of 393216 tokens: below that it is served as high.
    let o = dsv4(&["chat", "--demo", "-p", "Hi", "-n", "2", "--think-max"], &[]);
    assert!(o.status.success());
    assert!(text(&o.stderr).contains("think-max needs a context"), "{}", text(&o.stderr));
    let o = dsv4(&["chat", "--demo", "-p", "Hi", "--think", "--nothink"], &[]);
    assert!(!o.status.success());
}

#[test]
fn dump_tokens_and_logprobs() {
    let o = dsv4(&["chat", "--demo", "--dump-tokens", "-p", "Hello <｜User｜> world"], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let ids: Vec<u32> = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let tok = dsv4_tokenizer::Tokenizer::bundled().unwrap();
    assert_eq!(ids, tok.encode_with_special("Hello <｜User｜> world"));
    assert_eq!(out.lines().count(), 1 + ids.len());
    assert!(out.contains("128803  <｜User｜>"), "{out}");

    let d = tmp();
    let f = d.path().join("lp.json");
    let o = dsv4(
        &["chat", "--demo", "--nothink", "-n", "3", "-p", "Ciao", "--dump-logprobs", f.to_str().unwrap(), "--logprobs-top-k", "5"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    let steps = doc["steps"].as_array().unwrap();
    assert!(!steps.is_empty() && steps.len() <= 3);
    for s in steps {
        let top = s["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        assert_eq!(top[0]["token"], s["token"], "greedy picks the top token");
        let lps: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]) && lps[0] <= 0.0);
        assert!(s["token"]["bytes"].is_array() && s["token"]["text"].is_string());
    }
    assert!(doc["prompt_tokens"].as_u64().unwrap() > 3);
}

#[test]
fn refusals_name_the_problem() {
    let o = dsv4(&["chat", "--demo", "-p", "x", "--ctx", "8"], &[]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--ctx"), "{}", text(&o.stderr));
    let long = "word ".repeat(200);
    let o = dsv4(&["chat", "--demo", "-p", &long, "--ctx", "64"], &[]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("context"), "{}", text(&o.stderr));
    let o = dsv4(&["chat", "--demo", "-p", "x", "--top-p", "3"], &[]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("top_p"));

    // No model anywhere: the message names the download command.
    let home = tmp();
    let cwd = tmp();
    let o = Command::new(env!("CARGO_BIN_EXE_dsv4"))
        .args(["chat", "-p", "x"])
        .current_dir(cwd.path())
        .env("HOME", home.path())
        .env_remove("DSV4_MODEL")
        .env_remove("XDG_DATA_HOME")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("dsv4 download"), "{}", text(&o.stderr));
}

#[test]
fn model_found_through_the_environment() {
    let d = tmp();
    let path = d.path().join("m.gguf");
    let o = dsv4(&["synth", "--preset", "tiny", "--out", path.to_str().unwrap()], &[]);
    assert!(o.status.success());
    let o = dsv4(&["chat", "-p", "x", "-n", "2", "--nothink"], &[("DSV4_MODEL", path.to_str().unwrap())]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(path.to_str().unwrap()));
}

#[test]
fn test_vectors_check_prompt_token_counts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().map(|p| p.join("shared/test-vectors")).find(|p| p.exists())
        .or_else(|| Some(std::path::PathBuf::from("/work/shared/test-vectors")).filter(|p| p.exists()));
    let Some(dir) = dir else {
        assert!(std::env::var_os("CI").is_none(), "shared/test-vectors not found");
        eprintln!("skipping: shared/test-vectors not found");
        return;
    };
    let o = dsv4(&["test-vectors", "--dir", dir.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let out = text(&o.stdout);
    assert_eq!(out.matches(" ok").count(), 5, "{out}");
    assert!(out.contains("long_code_audit: prompt tokens 3844 (official 3844) ok"));
}

#[test]
fn repl_holds_a_conversation_through_a_pty() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/repl_pty.py");
    let o = Command::new("python3").arg(script).arg(env!("CARGO_BIN_EXE_dsv4")).output().unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains("repl ok"));
}

/// A long prompt's state is saved by the first run and restored by the next one.
#[test]
fn kv_disk_cache_survives_a_restart() {
    let d = tmp();
    let kv = d.path().join("kv");
    let trace = d.path().join("t.jsonl");
    let long: String = (0..500).map(|i| format!("item {i}, ")).collect();
    let args = |t: &str| {
        vec![
            "chat".to_string(), "--demo".into(), "--nothink".into(), "--temp".into(), "0".into(), "-n".into(), "4".into(),
            "-p".into(), long.clone(), "--kv-disk-dir".into(), kv.to_str().unwrap().into(), "--trace".into(), t.into(),
        ]
    };
    let run = |a: Vec<String>| Command::new(env!("CARGO_BIN_EXE_dsv4")).args(a).output().unwrap();
    let first = run(args(trace.to_str().unwrap()));
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = run(args(trace.to_str().unwrap()));
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(text(&second.stderr).contains("from disk"), "{}", text(&second.stderr));
    assert_eq!(first.stdout, second.stdout, "restored state, same greedy answer");
    let cache: Vec<serde_json::Value> = trace_events(&trace).into_iter().filter(|e| e["event"] == "cache").collect();
    assert_eq!(cache.len(), 2);
    assert!(cache[0]["saved_to_disk_tokens"].as_u64().unwrap() > 500);
    assert_eq!(cache[1]["from_disk_tokens"], cache[0]["saved_to_disk_tokens"]);
    let o = dsv4(&["kv", "stats", "--dir", kv.to_str().unwrap()], &[]);
    assert!(text(&o.stdout).starts_with("1 checkpoints"), "{}", text(&o.stdout));
}
