//! `tally-fuzz [--seconds N] [--seed S] [TARGET...]`: runs each target (every one when none is
//! named) for N seconds (default 20) on its mutated corpus. An input that panics is written to
//! `fuzz/crashes/TARGET/` and the exit status is 1. `tally-fuzz --replay TARGET FILE` runs one
//! input, to reproduce a crash.

use std::process::ExitCode;
use std::time::Duration;

use tally_fuzz::{TARGETS, Target, corpus, fuzz, run_once, target};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tally-fuzz: {e}");
            ExitCode::from(64)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    if let [flag, name, file] = args
        && flag == "--replay"
    {
        let target = target(name).ok_or_else(|| format!("no target {name:?}"))?;
        let input = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        return Ok(match run_once(target, &input) {
            Ok(()) => {
                println!("{name}: {file} passes");
                ExitCode::SUCCESS
            }
            Err(message) => {
                println!("{name}: {file} panics: {message}");
                ExitCode::FAILURE
            }
        });
    }
    let (mut seconds, mut seed, mut chosen) = (20u64, None, Vec::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| format!("{flag} takes a number"))?
                .parse::<u64>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match arg.as_str() {
            "--seconds" => seconds = value("--seconds")?,
            "--seed" => seed = Some(value("--seed")?),
            name => chosen.push(target(name).ok_or_else(|| format!("no target {name:?}; targets: {}", names()))?),
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.iter().collect();
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    // Panics are what the runner looks for: each is reported once, below, not by the hook.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for target in chosen {
        failed |= !fuzz_one(target, Duration::from_secs(seconds), seed)?;
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Fuzzes `target`; whether it held.
fn fuzz_one(target: &Target, budget: Duration, seed: u64) -> Result<bool, String> {
    let corpus = corpus(target).map_err(|e| format!("{}'s corpus: {e}", target.name))?;
    let inputs: Vec<Vec<u8>> = corpus.into_iter().map(|(_, bytes)| bytes).collect();
    for input in &inputs {
        if let Err(message) = run_once(target, input) {
            return Err(format!("{}: a corpus input panics: {message}", target.name));
        }
    }
    let outcome = fuzz(target, &inputs, budget, seed);
    let Some((input, message)) = outcome.failure else {
        println!(
            "{}: {} runs in {} s from {} inputs, seed {seed}: no failure",
            target.name,
            outcome.runs,
            budget.as_secs(),
            inputs.len()
        );
        return Ok(true);
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crashes").join(target.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join(format!("crash-{seed:016x}-{}", outcome.runs));
    std::fs::write(&file, &input).map_err(|e| format!("{}: {e}", file.display()))?;
    println!(
        "{}: FAILED after {} runs, seed {seed}: {message}\n  input ({} bytes) written to {}; reproduce with \
         `cargo run -p tally-fuzz -- --replay {} {}`",
        target.name,
        outcome.runs,
        input.len(),
        file.display(),
        target.name,
        file.display()
    );
    Ok(false)
}

fn names() -> String {
    TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}
