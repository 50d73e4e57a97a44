//! Byte-level language models from BPE language models (issue #6). Work in progress.
