//! What the CPU offers for the bulk work on every byte (AES-GCM on the wire, crc32c on disk),
//! where the fastest library differs by CPU (docs/BENCHMARKS.md).

/// 512-bit vector AES and carry-less multiplies (AVX-512 with VAES and VPCLMULQDQ).
pub fn avx512_vector_crypto() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && avx2_vector_crypto()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// 256-bit vector AES and carry-less multiplies (VAES and VPCLMULQDQ with AVX2).
pub fn avx2_vector_crypto() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("vaes")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
            && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
