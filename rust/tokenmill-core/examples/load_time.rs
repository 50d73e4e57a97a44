//! Prints how long loading a tokenizer.json or .tiktoken file takes, step by step.
//! `cargo run --release -p tokenmill-core --example load_time -- FILE`
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: load_time FILE");
    let data = std::fs::read(&path).expect("read");
    for _ in 0..3 {
        let t = Instant::now();
        if path.ends_with(".json") {
            let s = std::str::from_utf8(&data).expect("utf8");
            let tok = tokenmill_core::HfTokenizer::from_json(s, &path).expect("load");
            println!("tokenizer.json load {:?}", t.elapsed());
            drop(tok);
        } else {
            let ranks = tokenmill_core::tiktoken_file::parse(&data, &path).expect("parse");
            let parse = t.elapsed();
            let t = Instant::now();
            let bpe = tokenmill_core::bpe::Bpe::from_ranks(ranks).expect("bpe");
            println!(
                "parse {parse:?} bpe {:?} ({} tokens)",
                t.elapsed(),
                bpe.len()
            );
        }
    }
}
