//! Run-time selection of the AVX2 builds of vectorisable loops.
//!
//! The baseline x86-64 target has only SSE2; loops written so that the compiler vectorises
//! them are compiled a second time for AVX2 and FMA (`#[target_feature]`), and this picks that
//! build where the CPU has it. Rust never fuses a multiply and an add on its own, so both builds
//! do the same float operations in the same order and give bit-identical results.

/// Whether this CPU runs the AVX2 builds (detected once, then a cached load).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}
