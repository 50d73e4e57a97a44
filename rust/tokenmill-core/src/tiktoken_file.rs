//! The `.tiktoken` file format: one `base64(token_bytes) rank` pair per line.

use base64::{engine::general_purpose::STANDARD, Engine as _};

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::Rank;

/// Parses the contents of a `.tiktoken` file. `source_name` is used in error messages only.
/// Blank lines are ignored (as tiktoken does); anything else malformed is an error naming the line.
pub fn parse(contents: &[u8], source_name: &str) -> Result<Vec<(Vec<u8>, Rank)>> {
    let mut out = Vec::with_capacity(contents.len() / 12);
    let mut lines = Vec::with_capacity(contents.len() / 12);
    for (lineno, line) in contents.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| Error::file(source_name, format!("line {}: {msg}", lineno + 1));
        let mut parts = line.split(|&b| b == b' ');
        let (token, rank) = match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(r), None) => (t, r),
            _ => return Err(err("expected `<base64 token> <rank>`".into())),
        };
        let token = STANDARD
            .decode(token)
            .map_err(|e| err(format!("token is not valid base64 ({e})")))?;
        let rank = std::str::from_utf8(rank)
            .ok()
            .and_then(|r| r.parse::<Rank>().ok())
            .ok_or_else(|| {
                err(format!(
                    "rank {:?} is not a non-negative integer",
                    String::from_utf8_lossy(rank)
                ))
            })?;
        out.push((token, rank));
        lines.push(lineno + 1);
    }
    if out.is_empty() {
        return Err(Error::file(
            source_name,
            "no tokens (empty or truncated file)",
        ));
    }
    // Duplicates, with the lines they come from; hashing borrowed slices, no allocation per token.
    let mut seen_rank: FxHashMap<Rank, usize> =
        FxHashMap::with_capacity_and_hasher(out.len(), Default::default());
    let mut seen_token: FxHashMap<&[u8], usize> =
        FxHashMap::with_capacity_and_hasher(out.len(), Default::default());
    for (i, (token, rank)) in out.iter().enumerate() {
        if let Some(prev) = seen_rank.insert(*rank, i) {
            let msg = format!(
                "line {}: rank {rank} already given on line {}",
                lines[i], lines[prev]
            );
            return Err(Error::file(source_name, msg));
        }
        if let Some(prev) = seen_token.insert(token.as_slice(), i) {
            let msg = format!(
                "line {}: token {:?} already given on line {}",
                lines[i],
                String::from_utf8_lossy(token),
                lines[prev]
            );
            return Err(Error::file(source_name, msg));
        }
    }
    Ok(out)
}

/// Writes ranks in the `.tiktoken` format, ordered by rank (loadable by tiktoken itself).
pub fn write(ranks: &[(Vec<u8>, Rank)]) -> Vec<u8> {
    let mut sorted: Vec<_> = ranks.iter().collect();
    sorted.sort_by_key(|(_, r)| *r);
    let mut out = Vec::with_capacity(ranks.len() * 12);
    for (token, rank) in sorted {
        out.extend_from_slice(STANDARD.encode(token).as_bytes());
        out.push(b' ');
        out.extend_from_slice(rank.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let ranks = vec![(b"a".to_vec(), 0), (b"\xff\n".to_vec(), 1)];
        assert_eq!(parse(&write(&ranks), "x").unwrap(), ranks);
        assert!(matches!(parse(b"", "f"), Err(Error::InvalidFile { .. })));
        let e = parse(b"YQ== 0\n!!! 1\n", "f.tiktoken")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.tiktoken") && e.contains("line 2") && e.contains("base64"),
            "{e}"
        );
        let e = parse(b"YQ== x\n", "f").unwrap_err().to_string();
        assert!(e.contains("rank"), "{e}");
        let e = parse(b"YQ== 0\nYg== 0\n", "f").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("rank 0 already"), "{e}");
        let e = parse(b"YQ== 0\nYQ== 1\n", "f").unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("already given on line 1"),
            "{e}"
        );
        let e = parse(b"YQ==\n", "f").unwrap_err().to_string();
        assert!(e.contains("expected"), "{e}");
    }
}
