//! The tokenizer side of byte-level scoring alone, without a model: for every prefix of each
//! text file, the covering tree and the marginalisation of rows of uniform log-probabilities,
//! on a fresh `ByteLm` (every table starts empty, as in a new `tokenmill.bytelm.ByteLM`).
//! Which (node, token) pairs are checked does not depend on the row values (only `-inf`
//! skips a token), so this is the work `benches/bytelm_cpu_split.py` times as `tree` and
//! `marginalize_rows`, minus the cache misses the model's forward causes between calls.
//! Deterministic, so `valgrind --tool=callgrind` counts compare builds.
//!
//! `cargo run --release -p tokenmill-core --example bytelm_replay -- [--thrash MB] tokenizer.json
//! CHUNK...` (`benches/bytelm_cpu_split.py --dump DIR` writes the chunks it scores).
//! `--thrash MB` writes that many MiB between the tree and the marginalisation of each prefix,
//! as the model's forward does in the real loop (its weights and activations evict the
//! tokenizer's tables): the cold-cache cost that callgrind's counts do not show.
use std::time::Instant;

use tokenmill_core::bytelm::{row_norms, ByteLm, Row, Values};
use tokenmill_core::hf::HfTokenizer;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut thrash = Vec::new();
    if args.peek().map(String::as_str) == Some("--thrash") {
        args.next();
        let mb: usize = args
            .next()
            .and_then(|s| s.parse().ok())
            .expect("--thrash MB");
        thrash = vec![0u8; mb << 20];
    }
    let path = args.next().expect("tokenizer.json");
    let json = std::fs::read_to_string(&path).expect("read tokenizer");
    let enc = HfTokenizer::from_json(&json, &path)
        .expect("parse tokenizer")
        .to_encoding()
        .expect("a plain byte-level BPE");
    let chunks: Vec<Vec<u8>> = args
        .map(|p| std::fs::read(p).expect("read chunk"))
        .collect();
    let t = Instant::now();
    let lm = ByteLm::new(enc).expect("ByteLm");
    let t_new = t.elapsed().as_secs_f64();
    let n_cols = lm.encoding().bpe().n_slots();
    // Rows as the model hands them over: float32 logits (all equal) and their normaliser.
    let logits = vec![0.0f32; n_cols];
    let norm = row_norms(&logits, n_cols)[0];
    let (mut t_tree, mut t_marg, mut bytes) = (0.0, 0.0, 0usize);
    let mut check = 0.0;
    for chunk in &chunks {
        for k in 0..chunk.len() {
            let x = &chunk[..k];
            let t = Instant::now();
            let tree = lm.tree(x).expect("tree");
            t_tree += t.elapsed().as_secs_f64();
            let row = Row {
                values: Values::F32(&logits),
                norm,
            };
            let rows = vec![row; tree.nodes.len()];
            let logp = tree.path_logps(0.0, &rows);
            for (i, b) in thrash.iter_mut().enumerate().step_by(64) {
                *b = b.wrapping_add(i as u8);
            }
            std::hint::black_box(&thrash);
            let t = Instant::now();
            let m = lm
                .marginalize_rows(x, &tree, &logp, &rows, None)
                .expect("marginalize");
            t_marg += t.elapsed().as_secs_f64();
            check += m.log_total();
            bytes += 1;
        }
    }
    println!(
        "{bytes} prefixes: tree {t_tree:.3} s, marginalize_rows {t_marg:.3} s (checksum {check:.6}; \
         ByteLm::new {t_new:.3} s)"
    );
}
