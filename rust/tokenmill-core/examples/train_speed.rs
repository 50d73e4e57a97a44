//! Times BPE training on a corpus file whose documents are separated by NUL bytes.
//! `cargo run --release --example train_speed -- FILE VOCAB THREADS [PICKY] > merges.txt`
//! prints the merges (hex-encoded bytes) to stdout and timings to stderr.
use std::time::Instant;

use tokenmill_core::pretokenize::GPT2_PATTERN;
use tokenmill_core::train::{train, Control, Event, TrainConfig, WordCounter};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read_to_string(&args[1]).expect("read corpus");
    let vocab: usize = args[2].parse().unwrap();
    let threads: usize = args[3].parse().unwrap();
    let picky: Option<f64> = args.get(4).map(|s| s.parse().unwrap());
    let docs: Vec<&str> = data.split('\0').collect();
    let ctl = Control::new();
    let t0 = Instant::now();
    let mut wc = WordCounter::new(GPT2_PATTERN, &[]).unwrap();
    for batch in docs.chunks(256) {
        wc.add_texts(batch, threads, &ctl).unwrap();
    }
    eprintln!(
        "count: {:?}, {} distinct words",
        t0.elapsed(),
        wc.distinct()
    );
    let t1 = Instant::now();
    let cfg = TrainConfig {
        n_tokens: vocab,
        min_frequency: 0,
        max_token_length: None,
        picky_threshold: picky,
    };
    let t = train(wc.into_counts(), &cfg, &ctl).unwrap();
    eprintln!("merge: {:?}, total {:?}", t1.elapsed(), t0.elapsed());
    for e in &t.events {
        if let Event::Merge { left, right, .. } = e {
            let hex = |id: u32| -> String {
                t.tokens[id as usize]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            };
            println!("{} {}", hex(*left), hex(*right));
        }
    }
}
