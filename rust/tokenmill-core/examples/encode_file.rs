//! Encodes a text file with a `.tiktoken` vocabulary and the cl100k pattern; prints MB/s.
//! `cargo run --release -p tokenmill-core --example encode_file -- RANKS.tiktoken TEXT`
use std::time::Instant;

use tokenmill_core::encoding::Encoding;
use tokenmill_core::pretokenize::CL100K_PATTERN;

fn main() {
    let mut args = std::env::args().skip(1);
    let (ranks, text) = (
        args.next().expect("ranks file"),
        args.next().expect("text file"),
    );
    let ranks = tokenmill_core::tiktoken_file::parse(&std::fs::read(&ranks).expect("read"), &ranks)
        .expect("parse");
    let enc = Encoding::new(CL100K_PATTERN, ranks, vec![]).expect("encoding");
    let text = std::fs::read_to_string(text).expect("text");
    let t = Instant::now();
    let ids = enc.encode_ordinary(&text).expect("encode");
    let dt = t.elapsed().as_secs_f64();
    println!(
        "{} tokens, {:.2} MB/s",
        ids.len(),
        text.len() as f64 / dt / 1e6
    );
}
