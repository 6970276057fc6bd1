//! What JSON text weighs as host memory once parsed: one estimate for
//! every bound on parsed JSON the host holds (a request body or line, a
//! task's kept result, a tool's structured result). Must not touch:
//! parsing itself (callers weigh the text before they parse it).

/// Bytes of host memory a JSON text takes once parsed, past its own size:
/// [`VALUE_BYTES`] for each value in it (counted as the separators and
/// openers outside strings, with one for the top; a string is one value
/// whatever its length, its bytes already counted as the text's), and
/// [`OBJECT_VALUES`] more for each object. `[0,0,0,…]` is 2 bytes a value
/// in the text and a `serde_json::Value` of 32 bytes plus its share of
/// the array once parsed.
pub(crate) fn parsed_weight(text: &[u8]) -> usize {
    let (mut values, mut in_string, mut escaped) = (1usize, false, false);
    for &b in text {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{') => values += 1 + OBJECT_VALUES,
            (false, _, b',' | b'[' | b':') => values += 1,
            (false, _, _) => {}
        }
    }
    values.saturating_mul(VALUE_BYTES)
}

/// What one parsed JSON value is counted (a `serde_json::Value` is 32
/// bytes; an object's entry adds its key and its share of the map's node).
pub(crate) const VALUE_BYTES: usize = 64;

/// What an object is counted beyond its entries, in [`VALUE_BYTES`]: its
/// map's first node. serde_json's map is a `BTreeMap`, whose leaf node
/// holds room for 11 entries (632 bytes) however few it has: `{"a":0}`
/// takes about 830 bytes once parsed, and counted as three values it was
/// weighed at a quarter of that (found by review: a 3 MB line of small
/// objects, weighed under a connection's 64 MiB, held 238 MiB).
pub(crate) const OBJECT_VALUES: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes the allocator has handed out and not had back (glibc's count,
    /// over all threads).
    fn in_use() -> usize {
        // SAFETY: mallinfo2 reads the allocator's statistics; no input.
        let m = unsafe { libc::mallinfo2() };
        m.uordblks + m.hblkhd
    }

    #[test]
    fn a_text_weighs_its_values_and_objects() {
        assert_eq!(parsed_weight(b"0"), VALUE_BYTES);
        assert_eq!(parsed_weight(b"[0,0,0]"), 4 * VALUE_BYTES);
        // Separators inside strings, escaped quotes included, are text.
        assert_eq!(parsed_weight(br#""a,b:[{\",x""#), VALUE_BYTES);
        assert_eq!(
            parsed_weight(br#"{"a":[1,2]}"#),
            (5 + OBJECT_VALUES) * VALUE_BYTES
        );
    }

    /// Measured against the allocator: parsing an array of small objects
    /// holds no more than its weight, and more than three quarters of it.
    /// In a process of its own (this test binary again, running only
    /// this test): other tests' allocations and frees would move the
    /// allocator's count either way.
    #[test]
    fn small_objects_hold_no_more_than_their_weight() {
        const ALONE: &str = "TOOLHOST_TEST_WEIGHT_ALONE";
        if std::env::var_os(ALONE).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "weight::tests::small_objects_hold_no_more_than_their_weight",
                    "--test-threads=1",
                ])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && said.contains("1 passed"), "{said}");
            return;
        }
        let text = format!("[{}{{}}]", r#"{"a":0},"#.repeat(100_000));
        let weight = parsed_weight(text.as_bytes()) + text.len();
        let before = in_use();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let held = in_use().saturating_sub(before);
        drop(v);
        assert!(
            held <= weight && held > weight / 4 * 3,
            "{} bytes of text held {held}, weighed {weight}",
            text.len()
        );
    }
}
