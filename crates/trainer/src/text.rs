//! Tokenisation with character offsets and hashed sparse features (docs/contract.md, "Trainer").
//! Pure functions of the text and the feature config: no randomness, no hash maps, a hash (FNV-1a
//! 64) that is fixed forever so saved weights keep their meaning across versions.

/// The feature settings of `model.yaml` (echoed into the checkpoint's config.json).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureConfig {
    pub hash_dim: u32,
    pub window: u32,
    pub char_ngrams: bool,
    pub lowercase: bool,
    pub max_length: u32,
    pub use_crf: bool,
}

/// One token: char offsets `[start, end)` into the record text and its surface form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

fn is_word_char(c: char) -> bool {
    // Combining diacritics (U+0300–U+036F) continue a word: "e\u{301}" is one letter.
    c.is_alphanumeric() || ('\u{300}'..='\u{36f}').contains(&c)
}

/// Splits on whitespace and punctuation; a run of letters/digits is one token, every other
/// non-space character is a token of its own. Offsets are Unicode scalar indices.
pub fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if is_word_char(c) {
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
        } else {
            i += 1;
        }
        out.push(Token {
            start,
            end: i,
            text: chars[start..i].iter().collect(),
        });
    }
    out
}

/// FNV-1a 64 over the bytes.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Word shape: upper → X, lower → x, digit → d, other characters kept; at most 12 chars.
fn shape(s: &str) -> String {
    s.chars()
        .take(12)
        .map(|c| {
            if c.is_uppercase() {
                'X'
            } else if c.is_lowercase() {
                'x'
            } else if c.is_numeric() {
                'd'
            } else {
                c
            }
        })
        .collect()
}

/// Shape with runs collapsed ("Xxxxx" → "Xx", "555-0123" → "d-d"); at most 16 chars.
fn short_shape(s: &str) -> String {
    let mut out = String::new();
    let mut last = None;
    for c in s.chars() {
        let k = if c.is_uppercase() {
            'X'
        } else if c.is_lowercase() {
            'x'
        } else if c.is_numeric() {
            'd'
        } else {
            c
        };
        if last != Some(k) {
            out.push(k);
            last = Some(k);
        }
        if out.chars().count() >= 16 {
            break;
        }
    }
    out
}

/// The feature id 0-th of every token: the bias (never dropped out).
pub const BIAS: &str = "bias";

/// Hashed feature ids of every token, flattened: token `i` owns
/// `ids[offsets[i]..offsets[i + 1]]`, and its first id is always the bias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFeatures {
    pub ids: Vec<u32>,
    pub offsets: Vec<usize>,
}

impl TokenFeatures {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn of(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// Features of `tokens` (all of them; the caller truncates). `text` is the record text, used
/// for the whitespace-delimited chunk around each token.
pub fn features(text: &str, tokens: &[Token], cfg: &FeatureConfig) -> TokenFeatures {
    assert!(cfg.hash_dim > 0);
    let norm = |s: &str| -> String {
        if cfg.lowercase {
            s.to_lowercase()
        } else {
            s.to_string()
        }
    };
    let x = Featurizer {
        cfg,
        tokens,
        chars: text.chars().collect(),
        forms: tokens.iter().map(|t| norm(&t.text)).collect(),
        lowers: tokens.iter().map(|t| t.text.to_lowercase()).collect(),
    };
    let mut ids = Vec::with_capacity(tokens.len() * 32);
    let mut offsets = Vec::with_capacity(tokens.len() + 1);
    offsets.push(0);
    let mut buf = String::new();
    for i in 0..tokens.len() {
        x.word_features(&mut ids, i, &mut buf);
        x.chunk_features(&mut ids, i);
        x.context_features(&mut ids, i);
        offsets.push(ids.len());
    }
    let out = TokenFeatures { ids, offsets };
    debug_assert_eq!(out.len(), tokens.len());
    debug_assert!(out.ids.iter().all(|&f| f < cfg.hash_dim));
    out
}

/// What the features of one record's tokens are computed from: the record's chars and each
/// token's normalised (`forms`) and lowercased (`lowers`) text.
struct Featurizer<'a> {
    cfg: &'a FeatureConfig,
    tokens: &'a [Token],
    chars: Vec<char>,
    forms: Vec<String>,
    lowers: Vec<String>,
}

impl Featurizer<'_> {
    /// Appends the hashed id of the feature `name`.
    fn push(&self, ids: &mut Vec<u32>, name: &str) {
        ids.push((fnv1a64(name.as_bytes()) % u64::from(self.cfg.hash_dim)) as u32);
    }

    /// The bias, then token `i`'s own form: word, lowercase word, shapes, length and (when
    /// enabled) char prefixes and suffixes. `buf` is scratch space.
    fn word_features(&self, ids: &mut Vec<u32>, i: usize, buf: &mut String) {
        let tok = &self.tokens[i];
        let form = &self.forms[i];
        let lower = &self.lowers[i];
        self.push(ids, BIAS);
        buf.clear();
        buf.push_str("w=");
        buf.push_str(form);
        self.push(ids, buf);
        if !self.cfg.lowercase {
            self.push(ids, &format!("lw={lower}"));
        }
        self.push(ids, &format!("sh={}", shape(form)));
        self.push(ids, &format!("ss={}", short_shape(form)));
        self.push(ids, &format!("len={}", tok.text.chars().count().min(8)));
        if self.cfg.char_ngrams {
            let cs: Vec<char> = lower.chars().collect();
            for n in 1..=4usize {
                if cs.len() > n {
                    let p: String = cs[..n].iter().collect();
                    let s: String = cs[cs.len() - n..].iter().collect();
                    self.push(ids, &format!("p{n}={p}"));
                    self.push(ids, &format!("s{n}={s}"));
                }
            }
        }
    }

    /// The shape of the whitespace-delimited chunk holding token `i` ("j.doe@example.com."),
    /// and whether it holds an `@`.
    fn chunk_features(&self, ids: &mut Vec<u32>, i: usize) {
        let tok = &self.tokens[i];
        let chars = &self.chars;
        let mut a = tok.start;
        while a > 0 && !chars[a - 1].is_whitespace() {
            a -= 1;
        }
        let mut b = tok.end;
        while b < chars.len() && !chars[b].is_whitespace() {
            b += 1;
        }
        let chunk: String = chars[a..b].iter().collect();
        self.push(ids, &format!("cs={}", short_shape(&chunk)));
        if chunk.contains('@') {
            self.push(ids, "chunk@");
        }
    }

    /// Token `i`'s position and neighbours: whether it is first, the context words within the
    /// window, the neighbours' shapes and the bigram with the previous word.
    fn context_features(&self, ids: &mut Vec<u32>, i: usize) {
        let (tokens, forms, lowers) = (self.tokens, &self.forms, &self.lowers);
        let window = self.cfg.window as i64;
        if i == 0 {
            self.push(ids, "first");
        }
        // Context words within the window, and the neighbours' shapes.
        for d in 1..=window {
            for (sign, j) in [("-", i as i64 - d), ("+", i as i64 + d)] {
                let w = if j < 0 {
                    "<s>"
                } else if j as usize >= tokens.len() {
                    "</s>"
                } else {
                    lowers[j as usize].as_str()
                };
                self.push(ids, &format!("w{sign}{d}={w}"));
                if d == 1 {
                    let sh = if j < 0 || j as usize >= tokens.len() {
                        w.to_string()
                    } else {
                        short_shape(&forms[j as usize])
                    };
                    self.push(ids, &format!("ss{sign}1={sh}"));
                }
            }
        }
        if window >= 1 {
            let prev = if i == 0 {
                "<s>"
            } else {
                lowers[i - 1].as_str()
            };
            self.push(ids, &format!("bi={prev}|{}", lowers[i]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_char_offsets_and_punctuation() {
        let t = tokenize("Zoë, j.doe@example.com (555-0101).");
        let got: Vec<(&str, usize, usize)> = t
            .iter()
            .map(|t| (t.text.as_str(), t.start, t.end))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Zoë", 0, 3),
                (",", 3, 4),
                ("j", 5, 6),
                (".", 6, 7),
                ("doe", 7, 10),
                ("@", 10, 11),
                ("example", 11, 18),
                (".", 18, 19),
                ("com", 19, 22),
                ("(", 23, 24),
                ("555", 24, 27),
                ("-", 27, 28),
                ("0101", 28, 32),
                (")", 32, 33),
                (".", 33, 34),
            ]
        );
        assert!(tokenize("  \n ").is_empty());
    }

    #[test]
    fn hash_is_fixed() {
        assert_eq!(fnv1a64(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xAF63_DC4C_8601_EC8C);
    }

    #[test]
    fn features_start_with_bias_and_stay_in_range() {
        let cfg = FeatureConfig {
            hash_dim: 1000,
            window: 2,
            char_ngrams: true,
            lowercase: false,
            max_length: 10,
            use_crf: false,
        };
        let text = "Jane Doe, jane@example.com";
        let toks = tokenize(text);
        let f = features(text, &toks, &cfg);
        assert_eq!(f.len(), toks.len());
        let bias = (fnv1a64(BIAS.as_bytes()) % 1000) as u32;
        for i in 0..f.len() {
            assert_eq!(f.of(i)[0], bias);
        }
        assert_eq!(f, features(text, &toks, &cfg));
    }
}
