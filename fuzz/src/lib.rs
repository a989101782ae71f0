//! Fuzzing on the stable toolchain: the targets ([`targets`]), each with its corpus in
//! `fuzz/corpus/TARGET/` (seeds, and every input that once made it fail, as a regression), and
//! a mutational runner ([`fuzz`]) that CI runs for a bounded time per target (`scripts/fuzz.sh`).
//!
//! The runner is not coverage-guided: it mutates the corpus (bit flips, interesting values,
//! insertions and deletions, splices, the target's own tokens) and runs the target on each
//! result, catching panics. An input that panics is written to `fuzz/crashes/TARGET/` and the
//! run fails; add it to the corpus once fixed. The same targets run coverage-guided under
//! libFuzzer with a nightly toolchain (`fuzz/libfuzzer`).

pub mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A target: its name (its corpus directory) and its function.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// Fragments the mutator inserts: the syntax and the edge values of the target's format.
    pub tokens: &'static [&'static str],
}

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1.5",
    "1e999",
    "-0",
    "18446744073709551616",
    "9007199254740993",
    "\"events\"",
    "\"id\"",
    "\"type\"",
    "\"account\"",
    "\"time\"",
    "\"count\"",
    "\"user\"",
    "\"device\"",
    "\"2026-11-01T00:00:00Z\"",
    "\"2026-10-31T23:59:59Z\"",
    "\"\\u0000\"",
];
const CSV_TOKENS: &[&str] = &[
    ",",
    "\n",
    "\r\n",
    "\"",
    "#",
    "\u{feff}",
    "hq",
    "site,bucket_start,max_bps",
    "2026-10-07T00:05:00Z",
    "2026-10-07T00:05:01Z",
    "18446744073709551615",
    "-1",
    "60",
    "61",
    "0",
];
const TOML_TOKENS: &[&str] = &[
    "=",
    "\n",
    "\"",
    "[",
    "]",
    "#",
    "'''",
    "\"\"\"",
    "0",
    "-1",
    "1e3",
    "true",
    "18446744073709551616",
    "\"127.0.0.1:0\"",
    "wan",
    "lan",
    "state_dir",
    "data_dir",
    "log",
    "http_listen",
    "quic_listen",
    "database_url",
    "retention_days",
    "max_link_mbps",
    "grace_hours",
    "[[x]]",
    "inf",
    "nan",
];

/// Every target.
pub const TARGETS: &[Target] = &[
    Target { name: "frame_decoder", run: targets::frame_decoder, tokens: &["\0", "\u{1}", "\u{7f}", "\u{80}"] },
    Target { name: "lan_frame", run: targets::lan_frame, tokens: &["\u{8}\u{6}", "\u{86}\u{dd}", "\u{81}\0"] },
    Target { name: "events_body", run: targets::events_body, tokens: JSON_TOKENS },
    Target { name: "csv_import", run: targets::csv_import, tokens: CSV_TOKENS },
    Target { name: "agent_config", run: targets::agent_config, tokens: TOML_TOKENS },
    Target { name: "collector_config", run: targets::collector_config, tokens: TOML_TOKENS },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The corpus of `target`: every file of `fuzz/corpus/NAME/`, in name order.
pub fn corpus(target: &Target) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target.name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.sort();
    files.into_iter().map(|path| std::fs::read(&path).map(|bytes| (path, bytes))).collect()
}

/// `target` on `input`; the panic's message if it panicked.
pub fn run_once(target: &Target, input: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub runs: u64,
    /// The input that panicked, and the panic's message.
    pub failure: Option<(Vec<u8>, String)>,
}

/// Mutates `corpus` and runs `target` on each result for `budget`, from the random `seed`;
/// stops at the first panic.
pub fn fuzz(target: &Target, corpus: &[Vec<u8>], budget: Duration, seed: u64) -> Outcome {
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + budget;
    let mut runs = 0;
    let empty = [Vec::new()];
    let corpus = if corpus.is_empty() { &empty[..] } else { corpus };
    while Instant::now() < deadline {
        for _ in 0..64 {
            let input = mutate(&mut rng, corpus, target.tokens);
            runs += 1;
            if let Err(message) = run_once(target, &input) {
                return Outcome { runs, failure: Some((input, message)) };
            }
        }
    }
    Outcome { runs, failure: None }
}

/// One corpus input changed by one to eight random mutations.
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], tokens: &[&str]) -> Vec<u8> {
    const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b' ', b'\n'];
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..=rng.below(8) {
        let at = rng.below(data.len() + 1);
        let byte = at.min(data.len().saturating_sub(1));
        match rng.below(7) {
            0 if !data.is_empty() => data[byte] ^= 1 << rng.below(8),
            1 if !data.is_empty() => data[byte] = INTERESTING[rng.below(INTERESTING.len())],
            2 => {
                let bytes: Vec<u8> = (0..=rng.below(8)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            3 if !data.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            4 if !tokens.is_empty() => {
                let token = tokens[rng.below(tokens.len())].as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            5 => {
                // Splice: the head of this input, the tail of another.
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ if data.len() > 1 => {
                // Repeat a slice (lengths, nesting).
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(32)).min(data.len());
                let copy = data[start..end].to_vec();
                data.splice(at..at, copy);
            }
            _ => data.push(rng.next() as u8),
        }
        data.truncate(64 * 1024);
    }
    data
}

/// xorshift64*: small, and the same run again from the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}
