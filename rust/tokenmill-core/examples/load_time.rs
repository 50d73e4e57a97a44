//! Prints how long loading a tokenizer.json or .tiktoken file takes, step by step.
//! `cargo run --release --example load_time -- FILE`
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: load_time FILE");
    let t = Instant::now();
    let data = std::fs::read(&path).expect("read");
    let read = t.elapsed();
    let t = Instant::now();
    if path.ends_with(".json") {
        let s = std::str::from_utf8(&data).expect("utf8");
        let v: serde_json::Value = serde_json::from_str(s).expect("json");
        let parse = t.elapsed();
        drop(v);
        let t = Instant::now();
        let tok = tokenmill_core::HfTokenizer::from_json(s, &path).expect("load");
        println!(
            "read {read:?} json-parse-only {parse:?} full-load {:?}",
            t.elapsed()
        );
        drop(tok);
    } else {
        let ranks = tokenmill_core::tiktoken_file::parse(&data, &path).expect("parse");
        let parse = t.elapsed();
        let t = Instant::now();
        let bpe = tokenmill_core::bpe::Bpe::from_ranks(ranks).expect("bpe");
        println!(
            "read {read:?} parse {parse:?} bpe {:?} ({} tokens)",
            t.elapsed(),
            bpe.len()
        );
    }
}
