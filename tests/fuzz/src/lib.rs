//! A small mutation fuzzer for berth's input parsers, run by `cargo test` at a fixed budget.
//!
//! Each target has a corpus of valid and nearly valid inputs in `tests/fuzz/corpus/<target>/` (inputs that
//! once crashed a parser stay there as regressions) and a dictionary of the tokens its format is made of.
//! [`run`] feeds the corpus, then mutated inputs (bit flips, interesting bytes and numbers, dictionary
//! tokens, deletions, duplications, splices of two inputs), to the target and fails on the first panic,
//! keeping the input in a file and naming it.
//!
//! There is no coverage feedback (that needs a nightly compiler or an instrumented toolchain, which CI does
//! not have): this is a deterministic, structure-aware random search. `BERTH_FUZZ_EXECS` sets the number of
//! mutated inputs per target (the test's own figure otherwise) and `BERTH_FUZZ_SEED` the seed (0 by
//! default, so CI runs the same inputs every time and a failure reproduces).

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

/// Largest input the mutator makes.
const MAX_INPUT: usize = 64 * 1024;

/// Bytes that often matter to parsers.
const INTERESTING_BYTES: &[u8] = b"\0\x7f\xff\"\\{}[]:,.-+eE0 \n\t/?=&%#";

/// Numbers at the edges of the types parsers read them into.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1e308",
    "1e309",
    "-1e309",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "0.000000001",
    "1.7976931348623157e308",
    "2147483648",
    "65535",
    "65536",
    "NaN",
    "null",
];

/// What a run did.
#[derive(Debug)]
pub struct Report {
    pub target: String,
    /// Corpus inputs run.
    pub corpus: usize,
    /// Mutated inputs run.
    pub executions: u64,
    pub seed: u64,
}

/// xorshift64*: small, fast and the same everywhere.
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

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

/// Where a target's corpus lives.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

fn load_corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// One mutation of `input`, in place.
fn mutate_once(input: &mut Vec<u8>, rng: &mut Rng, dictionary: &[&str], corpus: &[Vec<u8>]) {
    let len = input.len();
    match rng.below(10) {
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input[at] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            input.drain(at..at + n);
        }
        4 if len > 0 => {
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(256));
            let chunk = input[from..from + n].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, chunk);
        }
        5 | 6 if !dictionary.is_empty() => {
            let token = dictionary[rng.below(dictionary.len())].as_bytes().to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, token);
        }
        7 => {
            // Replace a number (or insert one) with one at a type's edge.
            let number = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())].as_bytes().to_vec();
            let digits: Vec<usize> =
                input.iter().enumerate().filter(|(_, b)| b.is_ascii_digit()).map(|(i, _)| i).collect();
            if digits.is_empty() {
                let at = rng.below(len + 1);
                input.splice(at..at, number);
            } else {
                let start = digits[rng.below(digits.len())];
                let end =
                    (start..len).find(|&i| !input[i].is_ascii_digit() && input[i] != b'.').unwrap_or(len);
                input.splice(start..end, number);
            }
        }
        8 if !corpus.is_empty() => {
            // Splice: this input's head, another's tail.
            let other = &corpus[rng.below(corpus.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        _ if len > 0 => {
            input.truncate(rng.below(len));
        }
        _ => input.push(rng.next() as u8),
    }
    input.truncate(MAX_INPUT);
}

fn show(input: &[u8]) -> String {
    let mut s = String::new();
    for &b in input.iter().take(600) {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    if input.len() > 600 {
        s.push('…');
    }
    s
}

/// Runs `target` on its corpus and on `default_executions` mutated inputs (or `BERTH_FUZZ_EXECS`). On a
/// panic, keeps the input under the temporary directory and fails naming it.
pub fn run(
    name: &str,
    dictionary: &[&str],
    default_executions: u64,
    mut target: impl FnMut(&[u8]),
) -> Report {
    let corpus = load_corpus(name);
    let executions = env_number("BERTH_FUZZ_EXECS").unwrap_or(default_executions);
    let seed = env_number("BERTH_FUZZ_SEED").unwrap_or(0);
    // The seed is mixed with the target's name, so targets explore differently from one seed.
    let mut rng = Rng(name
        .bytes()
        .fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
        | 1);
    let mut check = |input: &[u8], what: &str| {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(input))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let dir = std::env::temp_dir().join("berth-fuzz-crashes");
            std::fs::create_dir_all(&dir).unwrap();
            let hash = input
                .iter()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            let file = dir.join(format!("{name}-{hash:016x}"));
            std::fs::write(&file, input).unwrap();
            panic!(
                "fuzz target `{name}` panicked on {what} (seed {seed}): {message}\nthe input is kept in {} \
                 (copy it into {} once fixed):\n{}",
                file.display(),
                corpus_dir(name).display(),
                show(input)
            );
        }
    };
    for (i, input) in corpus.iter().enumerate() {
        check(input, &format!("corpus input {i}"));
    }
    let mut input = Vec::new();
    for n in 0..executions {
        // Mostly a fresh corpus input with a few mutations; sometimes keep mutating the last one.
        if n % 4 != 3 || input.is_empty() {
            input.clone_from(&corpus[rng.below(corpus.len())]);
        }
        for _ in 0..1 + rng.below(4) {
            mutate_once(&mut input, &mut rng, dictionary, &corpus);
        }
        check(&input, &format!("mutated input {n}"));
    }
    let report = Report { target: name.to_string(), corpus: corpus.len(), executions, seed };
    eprintln!(
        "fuzz {name}: {} corpus inputs and {executions} mutated inputs (seed {seed}), no panic",
        report.corpus
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_bounded_and_vary() {
        let mut rng = Rng(7);
        let corpus = vec![b"{\"id\": \"web\", \"cpus\": 1}".to_vec()];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let mut input = corpus[0].clone();
            for _ in 0..4 {
                mutate_once(&mut input, &mut rng, &["\"instances\""], &corpus);
            }
            assert!(input.len() <= MAX_INPUT);
            seen.insert(input);
        }
        assert!(seen.len() > 1000, "only {} distinct inputs of 2000", seen.len());
    }

    #[test]
    fn a_panicking_target_fails_the_run_and_keeps_its_input() {
        let outcome = catch_unwind(|| {
            run("self-test", &[], 10_000, |input| {
                assert!(!input.windows(2).any(|w| w == b"}}"), "two closing braces");
            })
        });
        let message = *outcome.expect_err("the target panics on some input").downcast::<String>().unwrap();
        assert!(
            message.contains("two closing braces") && message.contains("berth-fuzz-crashes"),
            "{message}"
        );
    }
}
