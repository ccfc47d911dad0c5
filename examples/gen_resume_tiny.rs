//! Deterministic generator for the tiny synthetic resume-NER fixture dataset.
//!
//! Writes `train.json`, `validation.json` and `test.json` (one JSON array of
//! `{"text": ..., "annotations": [[start, end, LABEL], ...]}` records per split, one record
//! per line) where `start`/`end` are CHARACTER offsets (Unicode scalar values, end exclusive).
//! Labels: SKILL, EDUCATION, DESIGNATION, EXPERIENCE, NAME, EMAIL, PHONE, LOCATION.
//!
//! Everything is synthetic and PII-free: names are combined from short lists of common
//! generic first/last names, emails use `example.com`/`example.org`, phone numbers use the
//! reserved fictional `555-01xx` range, and cities are large well-known cities.
//!
//! Run (from the repository root):
//!
//! ```text
//! cargo run --release --example gen_resume_tiny -- [OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `fixtures/datasets/resume_tiny` relative to the current directory.
//! The output is committed to the repository; the generator uses an inline splitmix64 PRNG
//! with a fixed seed (not `rand`), so re-running it yields byte-identical files. Before
//! writing, it self-checks every span (bounds, char/token boundaries, no overlap, surface
//! text) and that the splits share no identical text, panicking on any violation.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

const SEED: u64 = 0x5EED_2E5E_0001_u64;
const SPLITS: [(&str, usize); 3] = [("train", 300), ("validation", 60), ("test", 60)];
const LABELS: [&str; 8] = [
    "SKILL",
    "EDUCATION",
    "DESIGNATION",
    "EXPERIENCE",
    "NAME",
    "EMAIL",
    "PHONE",
    "LOCATION",
];
/// Every `NO_ENTITY_EVERY`-th record of a split (offset 7) is an entity-free record.
const NO_ENTITY_EVERY: usize = 20;

/// splitmix64 (Steele, Lea & Flood 2014): tiny, well-mixed, value-stable by construction.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next_u64() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const FIRST_NAMES: &[&str] = &[
    "James", "Mary", "John", "Linda", "Michael", "Sarah", "David", "Emma", "Daniel", "Anna",
    "Peter", "Laura", "Thomas", "Maria", "Alex", "Julia", "Chris", "Nina", "Omar", "Priya", "Wei",
    "Yuki", "Jane", "Sam", "José", "Zoë", "Björn", "Renée", "Chloé", "Søren",
];
const LAST_NAMES: &[&str] = &[
    "Smith", "Johnson", "Brown", "Miller", "Davis", "Garcia", "Wilson", "Taylor", "Clark", "Lewis",
    "Walker", "Young", "Allen", "King", "Wright", "Martin", "Lee", "Doe", "Patel", "Chen", "Kim",
    "Müller", "Núñez", "Schäfer",
];
const CITIES: &[&str] = &[
    "London",
    "Berlin",
    "Paris",
    "Madrid",
    "Tokyo",
    "New York",
    "San Francisco",
    "Toronto",
    "Sydney",
    "Singapore",
    "Chicago",
    "Seattle",
    "Amsterdam",
    "Dublin",
    "Mumbai",
    "Bangalore",
    "Stockholm",
    "Vienna",
    "Seoul",
    "Mexico City",
    "Cape Town",
    "Boston",
    "Zürich",
    "São Paulo",
    "Montréal",
    "Kraków",
    "Bogotá",
    "Düsseldorf",
];
const SKILLS: &[&str] = &[
    "Python",
    "Rust",
    "SQL",
    "Kubernetes",
    "Docker",
    "Java",
    "Go",
    "C++",
    "C#",
    "TypeScript",
    "JavaScript",
    "React",
    "PostgreSQL",
    "Spark",
    "Hadoop",
    "TensorFlow",
    "PyTorch",
    "AWS",
    "Azure",
    "GCP",
    "Terraform",
    "Linux",
    "Git",
    "Scala",
    "Kotlin",
    "Airflow",
    "Kafka",
    "Pandas",
    "Excel",
    "Tableau",
    "Machine Learning",
    "NLP",
    "Node.js",
    "GraphQL",
];
/// (indefinite article, degree)
const EDUCATION: &[(&str, &str)] = &[
    ("a", "B.Sc. Computer Science"),
    ("an", "M.Sc. Data Science"),
    ("an", "MBA"),
    ("a", "Ph.D. in Physics"),
    ("a", "B.A. in Economics"),
    ("a", "Bachelor of Engineering"),
    ("a", "Master of Science in Statistics"),
    ("a", "B.Tech in Information Technology"),
    ("an", "M.Eng. in Electrical Engineering"),
    ("a", "BSc in Mathematics"),
    ("an", "MSc in Artificial Intelligence"),
    ("a", "Bachelor of Commerce"),
    ("a", "PhD in Computer Science"),
    ("an", "Associate Degree in Networking"),
    ("a", "Master of Business Administration"),
];
const DESIGNATIONS: &[&str] = &[
    "Data Engineer",
    "Software Engineer",
    "Senior Software Engineer",
    "Data Scientist",
    "Machine Learning Engineer",
    "DevOps Engineer",
    "Backend Developer",
    "Frontend Developer",
    "Full Stack Developer",
    "Product Manager",
    "Project Manager",
    "Business Analyst",
    "Data Analyst",
    "QA Engineer",
    "Site Reliability Engineer",
    "Engineering Manager",
    "Technical Lead",
    "Cloud Architect",
    "Research Scientist",
    "Database Administrator",
    "Analytics Engineer",
    "iOS Developer",
    "Embedded Systems Engineer",
    "Security Analyst",
];
const EXPERIENCE: &[&str] = &[
    "1 year",
    "2 years",
    "3 years",
    "4 years",
    "5 years",
    "6 years",
    "7 years",
    "8 years",
    "10 years",
    "12 years",
    "15 years",
    "3+ years",
    "5+ years",
    "7+ years",
    "10+ years",
    "18 months",
    "6 months",
    "2.5 years",
];
/// Unlabelled capitalised distractors (employers); not an entity type.
const ORGS: &[&str] = &[
    "Acme Corp",
    "Globex",
    "Initech",
    "Northwind Traders",
    "Contoso",
    "Umbrella Labs",
    "Stark Analytics",
    "Hooli",
    "Vandelay Industries",
    "Wayne Logistics",
];
const AREA_CODES: &[&str] = &["202", "212", "312", "415", "617", "206", "303", "512"];

/// Sentence templates. `{LABEL}` = one entity, `{SKILLS}` = 2-3 distinct SKILL entities
/// ("A, B and C"), `{a}` = "a"/"an" for the following placeholder, `{ORG}` = unlabelled org.
const TEMPLATES: &[&str] = &[
    "{NAME} is {a} {DESIGNATION} with {EXPERIENCE} of experience in {SKILLS}.",
    "{NAME} works as {a} {DESIGNATION} at {ORG} in {LOCATION}.",
    "Contact {NAME} at {EMAIL} or {PHONE}.",
    "Email: {EMAIL} | Phone: {PHONE} | Location: {LOCATION}",
    "{NAME} holds {a} {EDUCATION} and has {EXPERIENCE} of experience as {a} {DESIGNATION}.",
    "Skills: {SKILLS}.",
    "Experienced {DESIGNATION} based in {LOCATION}, skilled in {SKILLS}.",
    "{NAME}, {DESIGNATION}, {LOCATION}. Reach me at {EMAIL}.",
    "Over the past {EXPERIENCE} I have built data pipelines with {SKILL} and {SKILL}.",
    "Education: {EDUCATION}. Experience: {EXPERIENCE} as {a} {DESIGNATION}.",
    "I am {NAME}, {a} {DESIGNATION} from {LOCATION} with {a} {EDUCATION}.",
    "{NAME} relocated to {LOCATION} after {EXPERIENCE} at {ORG}.",
    "Proficient in {SKILL}; familiar with {SKILL} and {SKILL}.",
    "Call {PHONE} to reach {NAME} during business hours.",
    "{NAME} ({EMAIL}) is looking for {a} {DESIGNATION} role in {LOCATION}.",
    "Currently {a} {DESIGNATION} at {ORG}, previously {a} {DESIGNATION}.",
    "{EXPERIENCE} of hands-on experience with {SKILL} in production.",
    "Graduated with {a} {EDUCATION} and started as {a} {DESIGNATION} in {LOCATION}.",
    "Name: {NAME}. Phone: {PHONE}. Email: {EMAIL}.",
    "{NAME} led a team of four engineers using {SKILL} and {SKILL} for {EXPERIENCE}.",
    "Based in {LOCATION}, open to remote work and occasional travel.",
    "Certified in {SKILL}, {NAME} has taught {SKILL} workshops in {LOCATION}.",
    "Seeking {a} {DESIGNATION} position; {EXPERIENCE} of experience and {a} {EDUCATION}.",
    "Phone {PHONE}, email {EMAIL}.",
    "{NAME} mentored junior developers in {SKILLS} while working remotely from {LOCATION}.",
    "Worked {EXPERIENCE} as {a} {DESIGNATION} and {EXPERIENCE} as {a} {DESIGNATION}.",
    "Key strengths: {SKILLS}. Preferred location: {LOCATION}.",
    "{NAME} completed {a} {EDUCATION} in {LOCATION} before joining {ORG}.",
    "Wrote {SKILL} services handling millions of requests per day.",
    "My background: {EDUCATION}, then {EXPERIENCE} building {SKILL} tools.",
];
/// Entity-free sentences; entity-free records join two different ones.
const NO_ENTITY: &[&str] = &[
    "References available upon request.",
    "Looking for a collaborative team with a strong learning culture.",
    "Enjoys hiking, chess and reading in spare time.",
    "Open to relocation and remote work.",
    "Team player with strong communication skills.",
    "Passionate about clean code and good documentation.",
    "Volunteers at the local library on weekends.",
    "Available to start immediately after the notice period.",
    "Fluent in English and Spanish, conversational in German.",
];

fn fold_ascii(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'á' | 'ä' | 'ã' | 'à' => 'a',
            'é' | 'ë' | 'è' => 'e',
            'í' => 'i',
            'ó' | 'ö' | 'ø' => 'o',
            'ú' | 'ü' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            c => c,
        })
        .collect::<String>()
        .to_lowercase()
}

fn starts_with_vowel(s: &str) -> bool {
    matches!(
        s.chars().next(),
        Some('A' | 'E' | 'I' | 'O' | 'U' | 'a' | 'e' | 'i' | 'o' | 'u')
    )
}

struct Record {
    text: String,
    /// (start, end, label) in characters.
    spans: Vec<(usize, usize, &'static str)>,
    /// Expected surface strings, parallel to `spans`.
    surfaces: Vec<String>,
}

/// Per-record state: one person, and per-label values already used (to keep repeats distinct).
struct Ctx<'r> {
    rng: &'r mut SplitMix64,
    first: &'static str,
    last: &'static str,
    used: BTreeMap<&'static str, Vec<String>>,
}

impl Ctx<'_> {
    fn distinct(&mut self, label: &'static str, pool: &[&'static str]) -> String {
        let used = self.used.entry(label).or_default();
        for _ in 0..64 {
            let v = pool[self.rng.below(pool.len())].to_string();
            if !used.contains(&v) {
                used.push(v.clone());
                return v;
            }
        }
        panic!("could not find a distinct {label}");
    }

    /// Returns (article, surface) for one entity of `label`.
    fn value(&mut self, label: &'static str) -> (&'static str, String) {
        let v = match label {
            // Later mentions of the same person sometimes use the first name only.
            "NAME" if self.used.contains_key("NAME") && self.rng.below(2) == 0 => {
                self.first.to_string()
            }
            "NAME" => {
                self.used.entry("NAME").or_default();
                format!("{} {}", self.first, self.last)
            }
            "EMAIL" => {
                let (f, l) = (fold_ascii(self.first), fold_ascii(self.last));
                let domain = *self.rng.pick(&["example.com", "example.org"]);
                let email = match self.rng.below(4) {
                    0 => format!("{f}.{l}@{domain}"),
                    1 => format!("{}.{l}@{domain}", &f[..1]),
                    2 => format!("{f}{l}@{domain}"),
                    _ => format!("{f}.{l}{}@{domain}", 10 + self.rng.below(90)),
                };
                assert!(email.is_ascii(), "non-ASCII email {email}");
                email
            }
            "PHONE" => {
                let tail = format!("555-01{:02}", self.rng.below(100));
                let area = *self.rng.pick(AREA_CODES);
                match self.rng.below(4) {
                    0 => tail,
                    1 => format!("{area}-{tail}"),
                    2 => format!("+1 {area} {}", tail.replace('-', " ")),
                    _ => format!("+1-{area}-{tail}"),
                }
            }
            "EDUCATION" => {
                let pool: Vec<&'static str> = EDUCATION.iter().map(|e| e.1).collect();
                let v = self.distinct(label, &pool);
                let art = EDUCATION.iter().find(|e| e.1 == v).unwrap().0;
                return (art, v);
            }
            "LOCATION" => self.distinct(label, CITIES),
            "SKILL" => self.distinct(label, SKILLS),
            "DESIGNATION" => self.distinct(label, DESIGNATIONS),
            "EXPERIENCE" => self.distinct(label, EXPERIENCE),
            "ORG" => self.rng.pick(ORGS).to_string(),
            _ => panic!("unknown placeholder {label}"),
        };
        (if starts_with_vowel(&v) { "an" } else { "a" }, v)
    }
}

enum Part {
    Lit(String),
    Ent(&'static str, String),
}

fn label_of(name: &str) -> &'static str {
    LABELS
        .iter()
        .copied()
        .chain(["ORG"])
        .find(|l| *l == name)
        .unwrap_or_else(|| panic!("unknown placeholder {{{name}}}"))
}

/// Expands one template into literal / entity parts (article `{a}` resolved afterwards).
fn expand(tpl: &str, cx: &mut Ctx) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = tpl;
    while let Some(open) = rest.find('{') {
        parts.push(Part::Lit(rest[..open].to_string()));
        let close = open + rest[open..].find('}').expect("unclosed placeholder");
        let name = &rest[open + 1..close];
        match name {
            "a" => parts.push(Part::Lit("{a}".to_string())),
            "SKILLS" => {
                let n = 2 + cx.rng.below(2);
                for i in 0..n {
                    if i > 0 {
                        parts.push(Part::Lit(
                            if i + 1 == n { " and " } else { ", " }.to_string(),
                        ));
                    }
                    parts.push(Part::Ent("SKILL", cx.value("SKILL").1));
                }
            }
            "ORG" => parts.push(Part::Lit(cx.value("ORG").1)),
            _ => {
                let label = label_of(name);
                let (art, v) = cx.value(label);
                // Resolve a directly preceding "{a} " now that the entity is known.
                if let Some(Part::Lit(prev)) = parts.iter_mut().rev().nth(1) {
                    if prev == "{a}" {
                        *prev = art.to_string();
                    }
                }
                parts.push(Part::Ent(label, v));
            }
        }
        rest = &rest[close + 1..];
    }
    parts.push(Part::Lit(rest.to_string()));
    assert!(
        parts
            .iter()
            .all(|p| !matches!(p, Part::Lit(s) if s.contains("{a}"))),
        "unresolved {{a}} in {tpl}"
    );
    parts
}

fn render(parts: Vec<Part>) -> Record {
    let mut rec = Record {
        text: String::new(),
        spans: Vec::new(),
        surfaces: Vec::new(),
    };
    let mut pos = 0usize; // in chars
    for p in parts {
        match p {
            Part::Lit(s) => {
                pos += s.chars().count();
                rec.text.push_str(&s);
            }
            Part::Ent(label, s) => {
                let n = s.chars().count();
                rec.spans.push((pos, pos + n, label));
                pos += n;
                rec.text.push_str(&s);
                rec.surfaces.push(s);
            }
        }
    }
    rec
}

fn gen_record(rng: &mut SplitMix64, no_entity: bool) -> Record {
    if no_entity {
        let a = rng.below(NO_ENTITY.len());
        let b = (a + 1 + rng.below(NO_ENTITY.len() - 1)) % NO_ENTITY.len();
        let text = format!("{} {}", NO_ENTITY[a], NO_ENTITY[b]);
        return Record {
            text,
            spans: Vec::new(),
            surfaces: Vec::new(),
        };
    }
    let first = *rng.pick(FIRST_NAMES);
    let last = *rng.pick(LAST_NAMES);
    let mut cx = Ctx {
        rng,
        first,
        last,
        used: BTreeMap::new(),
    };
    let mut parts: Vec<Part> = Vec::new();
    let mut words = 0usize;
    let mut used_tpl: Vec<usize> = Vec::new();
    // 1-3 sentences, stop once the record has at least 10 words (max 3 sentences).
    while used_tpl.len() < 3 && (words < 10 || (used_tpl.len() < 2 && cx.rng.below(3) == 0)) {
        let t = cx.rng.below(TEMPLATES.len());
        if used_tpl.contains(&t) {
            continue;
        }
        used_tpl.push(t);
        if let Some(prev) = used_tpl.iter().rev().nth(1) {
            // Templates without final punctuation get a full stop when something follows.
            let sep = if !TEMPLATES[*prev].ends_with(['.', ';']) {
                ". "
            } else {
                " "
            };
            parts.push(Part::Lit(sep.to_string()));
        }
        let sentence = expand(TEMPLATES[t], &mut cx);
        words += render_words(&sentence);
        parts.extend(sentence);
    }
    render(parts)
}

fn render_words(parts: &[Part]) -> usize {
    let s: String = parts
        .iter()
        .map(|p| match p {
            Part::Lit(s) | Part::Ent(_, s) => s.as_str(),
        })
        .collect();
    s.split_whitespace().count()
}

/// Panics unless every span of `rec` is valid.
fn check(rec: &Record) {
    let chars: Vec<char> = rec.text.chars().collect();
    let mut prev_end = 0usize;
    for (i, &(s, e, label)) in rec.spans.iter().enumerate() {
        let ctx = || format!("span {i} {:?} in {:?}", (s, e, label), rec.text);
        assert!(LABELS.contains(&label), "bad label: {}", ctx());
        assert!(s < e && e <= chars.len(), "out of bounds: {}", ctx());
        assert!(s >= prev_end, "overlap/unsorted: {}", ctx());
        prev_end = e;
        let surface: String = chars[s..e].iter().collect();
        assert_eq!(surface, rec.surfaces[i], "surface mismatch: {}", ctx());
        // Byte slice via char_indices must agree too (char-boundary check).
        let byte = |c: usize| {
            rec.text
                .char_indices()
                .nth(c)
                .map_or(rec.text.len(), |(b, _)| b)
        };
        let (bs, be) = (byte(s), byte(e));
        assert!(rec.text.is_char_boundary(bs) && rec.text.is_char_boundary(be));
        assert_eq!(&rec.text[bs..be], surface, "byte slice mismatch: {}", ctx());
        // Token boundaries: no whitespace at the edges, no letter/digit glued on either side.
        assert!(
            !chars[s].is_whitespace() && !chars[e - 1].is_whitespace(),
            "ws edge: {}",
            ctx()
        );
        assert!(
            s == 0 || !chars[s - 1].is_alphanumeric(),
            "left boundary: {}",
            ctx()
        );
        assert!(
            e == chars.len() || !chars[e].is_alphanumeric(),
            "right boundary: {}",
            ctx()
        );
    }
}

fn to_json_line(rec: &Record) -> String {
    let anns: Vec<serde_json::Value> = rec
        .spans
        .iter()
        .map(|&(s, e, l)| serde_json::json!([s, e, l]))
        .collect();
    serde_json::to_string(&serde_json::json!({ "text": rec.text, "annotations": anns }))
        .expect("serialize record")
}

fn main() {
    let out_dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fixtures/datasets/resume_tiny"));
    let mut rng = SplitMix64(SEED);
    let mut seen: HashSet<String> = HashSet::new();
    let mut splits: Vec<(&str, Vec<Record>)> = Vec::new();

    for (name, n) in SPLITS {
        let mut recs = Vec::with_capacity(n);
        while recs.len() < n {
            let no_entity = recs.len() % NO_ENTITY_EVERY == 7;
            let rec = gen_record(&mut rng, no_entity);
            check(&rec);
            // Dedupe globally so that no text appears twice within or across splits.
            if seen.insert(rec.text.clone()) {
                recs.push(rec);
            }
        }
        splits.push((name, recs));
    }

    // Split-level self-checks: every label present, plus the edge cases we promise.
    for (name, recs) in &splits {
        for label in LABELS {
            assert!(
                recs.iter().any(|r| r.spans.iter().any(|s| s.2 == label)),
                "{name}: no {label}"
            );
        }
        assert!(
            recs.iter().any(|r| r.spans.is_empty()),
            "{name}: no entity-free record"
        );
        assert!(
            recs.iter()
                .any(|r| r.surfaces.iter().any(|s| !s.is_ascii())),
            "{name}: no non-ASCII entity"
        );
        assert!(
            recs.iter().any(|r| {
                let c: Vec<char> = r.text.chars().collect();
                r.spans
                    .iter()
                    .any(|&(_, e, _)| e < c.len() && matches!(c[e], '.' | ',' | ';' | ')'))
            }),
            "{name}: no entity adjacent to punctuation"
        );
    }
    let texts: Vec<HashSet<&str>> = splits
        .iter()
        .map(|(_, rs)| rs.iter().map(|r| r.text.as_str()).collect())
        .collect();
    for i in 0..texts.len() {
        for j in i + 1..texts.len() {
            assert!(
                texts[i].is_disjoint(&texts[j]),
                "splits {i} and {j} share a text"
            );
        }
    }

    std::fs::create_dir_all(&out_dir).expect("create output dir");
    for (name, recs) in &splits {
        let body: Vec<String> = recs.iter().map(to_json_line).collect();
        let content = format!("[\n{}\n]\n", body.join(",\n"));
        // Round-trip: the written JSON must parse back to the same offsets.
        let parsed: serde_json::Value = serde_json::from_str(&content).expect("re-parse");
        assert_eq!(parsed.as_array().map(Vec::len), Some(recs.len()));
        let path = out_dir.join(format!("{name}.json"));
        std::fs::write(&path, &content).expect("write split");

        let mut per_label: BTreeMap<&str, usize> = LABELS.iter().map(|l| (*l, 0)).collect();
        for r in recs {
            for s in &r.spans {
                *per_label.get_mut(s.2).unwrap() += 1;
            }
        }
        let words: Vec<usize> = recs
            .iter()
            .map(|r| r.text.split_whitespace().count())
            .collect();
        println!(
            "{}: {} records, {} bytes, {} entity-free, words {}..{}, {:?}",
            path.display(),
            recs.len(),
            content.len(),
            recs.iter().filter(|r| r.spans.is_empty()).count(),
            words.iter().min().unwrap(),
            words.iter().max().unwrap(),
            per_label
        );
    }
}
