//! Test helpers for the byte checks against `nft --debug=mnl` captures (tests only).

use crate::TableBatch;

/// A hex dump as nft prints it (whitespace ignored) as bytes.
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The attributes (after nlmsghdr + nfgenmsg) of every message in the batch.
pub fn msgs(b: &TableBatch) -> Vec<Vec<u8>> {
    let mut w = &b.wire()[20..]; // after BATCH_BEGIN
    let mut out = Vec::new();
    while !w.is_empty() {
        let len = u32::from_ne_bytes(w[0..4].try_into().unwrap()) as usize;
        out.push(w[20..len].to_vec());
        w = &w[len..];
    }
    out
}
