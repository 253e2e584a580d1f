//! Short, stable names for files and cgroups derived from longer text.

/// FNV-1a, 64 bits: a fixed-length name for an id or a path (not a security boundary).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}
