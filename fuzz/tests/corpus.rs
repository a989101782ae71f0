//! Every input of every target's corpus (its seeds, and the inputs that once made it fail) runs
//! clean: the regression tests of the fuzz targets. A short mutational run of each follows, so
//! that `cargo test` alone already fuzzes a little.

use std::time::Duration;

use tally_fuzz::{TARGETS, corpus, fuzz, run_once};

#[test]
fn every_corpus_input_of_every_target_runs_clean() {
    for target in TARGETS {
        let inputs = corpus(target).unwrap_or_else(|e| panic!("{}'s corpus: {e}", target.name));
        assert!(!inputs.is_empty(), "{} has no corpus", target.name);
        for (path, input) in inputs {
            if let Err(message) = run_once(target, &input) {
                panic!("{}: {} panics: {message}", target.name, path.display());
            }
        }
    }
}

#[test]
fn each_target_survives_a_second_of_mutations() {
    for target in TARGETS {
        let inputs: Vec<Vec<u8>> = corpus(target).unwrap().into_iter().map(|(_, bytes)| bytes).collect();
        let outcome = fuzz(target, &inputs, Duration::from_secs(1), 0x7a11);
        assert!(outcome.runs > 0);
        if let Some((input, message)) = outcome.failure {
            panic!("{}: {message}\ninput: {:?}", target.name, String::from_utf8_lossy(&input));
        }
    }
}
