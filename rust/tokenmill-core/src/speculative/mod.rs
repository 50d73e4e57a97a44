//! Training-free speculative decoding: drafters, draft trees, verification (issue #7).
//! Work in progress.
