//! Training-free speculative decoding: drafters, draft trees and lossless tree verification
//! (issue #7).
//!
//! A decoding step with a draft tree is: build a tree of guesses rooted at the last token
//! (the one the model has not seen yet) from cheap statistics ([`drafters`]), flatten it into
//! arrays the model can take in one forward pass with a tree attention mask ([`tree`]), then
//! keep the longest prefix of some branch that the target model agrees with, plus one token
//! from the target itself ([`verify`]). Greedy verification reproduces greedy decoding token
//! for token; sampling verification reproduces ordinary sampling in distribution.
//!
//! [`Speculator`] ties the pieces together for one decoding session: it owns the context and
//! the drafters and remembers the tree of the current step, so that Python hands over only
//! what the model produced (argmaxes, top-k, probabilities).

pub mod drafters;
pub mod logits;
pub mod speculator;
pub mod tree;
pub mod verify;

pub use drafters::{Adjacency, History, SuffixIndex, Trigram};
pub use speculator::{calibrate, DrafterKind, Speculator, Step, StepConfig};
pub use tree::DraftTree;
pub use verify::{verify_greedy, verify_sample, Verified};
