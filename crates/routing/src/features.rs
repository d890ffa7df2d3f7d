//! The prompt's compact representation for per-prompt learning: hashed sparse n-grams.
//!
//! Computed at routing time and stored with the request (`requests.features`), so learning never
//! needs the prompt text (it works with `STORE_PROMPTS=hash|none`). No model weights: lowercase
//! word unigrams and bigrams, character 4-grams of the normalised text (letters and digits, one
//! space between words — robust to spelling, morphology and formatting), and one length bucket,
//! each hashed (XXH3, a fixed, portable hash: stored features stay valid across builds) into
//! `2^FEATURE_BITS` buckets. At most [`MAX_FEATURES`] distinct buckets are kept per prompt — for
//! longer prompts the ones with the smallest re-hashed index (a bottom-k sketch: the same n-gram
//! is kept or dropped the same way in every prompt, so long prompts stay comparable). Every kept
//! feature has the value `1/√k`, so a prompt's vector has unit length.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The featurizer's name, stored with each predictor: a predictor only reads features made by
/// the featurizer it was trained on.
pub const FEATURIZER: &str = "ngram-v1";
/// log2 of the hashed feature space.
pub const FEATURE_BITS: u32 = 18;
/// Buckets in the hashed feature space.
pub const FEATURE_DIM: usize = 1 << FEATURE_BITS;
/// Most distinct features kept per prompt (2 KB per stored request at most).
pub const MAX_FEATURES: usize = 512;
/// Bytes of the prompt read: the head (instructions and question sit there).
const MAX_BYTES: usize = 8192;

const SEED_WORD: u64 = 0x574f_5244; // "WORD"
const SEED_CHAR: u64 = 0x4348_4152; // "CHAR"

/// The sorted, distinct feature indices of `text` (each in `0..FEATURE_DIM`).
pub fn featurize(text: &str) -> Vec<u32> {
    let head = head(text, MAX_BYTES);
    let normal = normalise(head);
    let mut set = FeatureSet::new(normal.len() / 2 + 8);
    let mut prev: Option<u64> = None;
    for word in normal.split(' ').filter(|w| !w.is_empty()) {
        let h = xxh3_64_with_seed(word.as_bytes(), SEED_WORD);
        set.add(bucket(h));
        if let Some(p) = prev {
            set.add(bucket(mix(p.rotate_left(21) ^ h)));
        }
        prev = Some(h);
    }
    let padded = format!(" {normal} ");
    for window in padded.as_bytes().windows(4) {
        let gram = u32::from_le_bytes([window[0], window[1], window[2], window[3]]);
        set.add(bucket(mix(u64::from(gram) ^ SEED_CHAR)));
    }
    let length_bucket = (normal.len().max(1)).ilog2();
    set.add(bucket(xxh3_64(format!("len:{length_bucket}").as_bytes())));
    let mut out = set.found;
    if out.len() > MAX_FEATURES {
        out.select_nth_unstable_by_key(MAX_FEATURES, |i| mix(u64::from(*i)));
        out.truncate(MAX_FEATURES);
    }
    out.sort_unstable();
    out
}

/// Distinct feature indices in the order found: a bitmap over the feature space makes each
/// insert O(1), so only the distinct ones are sorted.
struct FeatureSet {
    seen: Vec<u64>,
    found: Vec<u32>,
}

impl FeatureSet {
    fn new(capacity: usize) -> Self {
        Self {
            seen: vec![0; FEATURE_DIM / 64],
            found: Vec::with_capacity(capacity),
        }
    }

    fn add(&mut self, index: u32) {
        let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
        if let Some(w) = self.seen.get_mut(word)
            && *w & bit == 0
        {
            *w |= bit;
            self.found.push(index);
        }
    }
}

/// The value every feature of a prompt with `n` features has (unit length).
pub fn feature_value(n: usize) -> f32 {
    if n == 0 { 0.0 } else { 1.0 / (n as f32).sqrt() }
}

fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Lowercase letters and digits; every other run of characters becomes one space.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
            space = false;
        } else if !c.is_ascii() && c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

fn bucket(h: u64) -> u32 {
    (h >> (64 - FEATURE_BITS)) as u32
}

/// A 64-bit finaliser (splitmix64's).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_sorted_distinct_bounded_and_stable() {
        let a = featurize("What is the capital of France?");
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|i| (*i as usize) < FEATURE_DIM));
        assert_eq!(a, featurize("what is the CAPITAL of france"));
        let long = "word ".repeat(100) + &(0..3000).map(|i| format!("w{i} ")).collect::<String>();
        let f = featurize(&long);
        assert_eq!(f.len(), MAX_FEATURES);
        assert!(featurize("").len() <= 2);
    }

    #[test]
    fn similar_prompts_share_more_features_than_different_ones() {
        let overlap =
            |a: &[u32], b: &[u32]| a.iter().filter(|i| b.binary_search(i).is_ok()).count();
        let q1 = featurize("Solve for x: 3x + 5 = 20");
        let q2 = featurize("Solve for x: 7x - 2 = 12");
        let other = featurize("Write a sonnet about autumn leaves");
        assert!(overlap(&q1, &q2) > 3 * overlap(&q1, &other).max(1));
    }

    #[test]
    fn non_ascii_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_BYTES);
        assert!(!featurize(&text).is_empty());
    }
}
