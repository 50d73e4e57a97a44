//! Pre-tokenizer throughput: the hand-written scanners against fancy-regex on a text file.
//!
//!     cargo run --release -p tokenmill-core --example pretok_speed -- FILE [SECONDS]
//!
//! e.g. with FILE a concatenation of the Python standard library's *.py files. Also checks that
//! both produce the same matches, so a run doubles as a large differential test.

use std::time::{Duration, Instant};

use tokenmill_core::pretokenize::{
    Pretokenizer, CL100K_PATTERN, GPT2_PATTERN, LLAMA3_PATTERN, O200K_PATTERN, QWEN2_PATTERN,
    R50K_PATTERN,
};

/// Runs `f` repeatedly for about `budget`, returning MB/s over `bytes` per run and the result.
fn throughput<T>(bytes: usize, budget: Duration, mut f: impl FnMut() -> T) -> (f64, T) {
    let start = Instant::now();
    let mut runs = 0u32;
    let result = loop {
        let r = f();
        runs += 1;
        if start.elapsed() >= budget {
            break r;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    (bytes as f64 * runs as f64 / secs / 1e6, result)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: pretok_speed FILE [SECONDS]");
    let seconds: f64 = args
        .next()
        .map_or(2.0, |s| s.parse().expect("SECONDS must be a number"));
    let budget = Duration::from_secs_f64(seconds);
    let bytes = std::fs::read(&path).expect("cannot read FILE");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    println!("{path}: {:.2} MB", text.len() as f64 / 1e6);
    println!(
        "{:<8} {:>10} {:>14} {:>14} {:>8}",
        "pattern", "pieces", "scanner MB/s", "regex MB/s", "speedup"
    );

    let patterns = [
        ("r50k", R50K_PATTERN),
        ("gpt2", GPT2_PATTERN),
        ("cl100k", CL100K_PATTERN),
        ("llama3", LLAMA3_PATTERN),
        ("qwen2", QWEN2_PATTERN),
        ("o200k", O200K_PATTERN),
    ];
    for (name, pattern) in patterns {
        let fast = Pretokenizer::new(pattern).unwrap();
        assert!(fast.is_fast());
        let regex = fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(usize::MAX)
            .build()
            .unwrap();

        let (scan_mbs, (count, hash)) = throughput(text.len(), budget, || {
            let (mut count, mut hash) = (0usize, 0u64);
            fast.for_each_match(&text, |s, e| {
                count += 1;
                hash = hash
                    .wrapping_mul(0x100_0000_01b3)
                    .wrapping_add((s as u64) << 32 | e as u64);
            })
            .unwrap();
            (count, hash)
        });
        let (regex_mbs, (rcount, rhash)) = throughput(text.len(), budget, || {
            let (mut count, mut hash) = (0usize, 0u64);
            for m in regex.find_iter(&text) {
                let m = m.unwrap();
                count += 1;
                hash = hash
                    .wrapping_mul(0x100_0000_01b3)
                    .wrapping_add((m.start() as u64) << 32 | m.end() as u64);
            }
            (count, hash)
        });
        assert_eq!(
            (count, hash),
            (rcount, rhash),
            "{name}: scanner and fancy-regex disagree"
        );
        println!(
            "{name:<8} {count:>10} {scan_mbs:>14.1} {regex_mbs:>14.1} {:>7.1}x",
            scan_mbs / regex_mbs
        );
    }
}
