//! QueryPatternAnalyzer: prompt → pattern and complexity. Pure, deterministic, no I/O.
//!
//! How it decides (every number below is a documented constant in this file):
//! - **Where it looks.** Instructions sit at the start or the end of a prompt, while a pasted
//!   document in the middle says little about the task. Cue matching therefore reads the first
//!   4 KiB and the last 1 KiB (`HEAD_BYTES`, `TAIL_BYTES`); length and script features read the
//!   whole text. So a 1 MB prompt costs one linear byte pass plus a bounded cue scan.
//! - **Pattern.** One Aho–Corasick pass (ASCII case-insensitive) finds cue phrases; each cue adds
//!   its weight to one pattern (a cue counts at most twice). Structure adds more: code fences and
//!   code syntax (`::`, `->`, `();`, `def `, `#include`…) → code; digit–operator–digit runs,
//!   LaTeX commands and math symbols → math; a long prompt with a summarization cue →
//!   summarization; a short wh-question → factual; a short prompt with arithmetic → math. The
//!   highest score wins, ties broken by [`Pattern::PRIORITY`]; below `MIN_PATTERN_SCORE` the pattern is `chat` for a short prompt and
//!   `other` otherwise.
//! - **Complexity** in 0..1 is a weighted sum of saturating features: length in estimated tokens
//!   (log scale up to 4k tokens, weight 0.25), multi-step cues ("step by step", "first… then",
//!   numbered lists; 0.22), constraints ("must", "at least", "do not", "exactly"…; 0.18), code
//!   depth (0.10), math density (0.10), several questions (0.05), a non-Latin script (0.05), plus
//!   a base per pattern (math and reasoning 0.12, code 0.10, creative 0.03). Tiers: low < 0.35 ≤
//!   medium < 0.65 ≤ high.
//! - **Tokens** are estimated, not tokenized: ASCII bytes / 4 plus 0.75 per non-ASCII character
//!   (CJK runs near one token per character, accented Latin far less). Within ±25% of real BPE
//!   tokenizers on English prose, which is what routing needs; billing uses provider usage.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};

pub use optimizer_types::Pattern;

/// Complexity tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Low,
    Medium,
    High,
}

impl Tier {
    pub fn of(complexity: f64) -> Self {
        if complexity < 0.35 {
            Tier::Low
        } else if complexity < 0.65 {
            Tier::Medium
        } else {
            Tier::High
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Low => "low",
            Tier::Medium => "medium",
            Tier::High => "high",
        }
    }
}

/// The dominant script of a prompt's letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Script {
    Latin,
    Cjk,
    Cyrillic,
    Arabic,
    Other,
}

/// What the analyzer measured; returned with the decision so it can be explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub chars: usize,
    pub est_tokens: u64,
    pub code_fences: u32,
    pub code_cues: u32,
    pub math_cues: u32,
    pub multi_step_cues: u32,
    pub constraint_cues: u32,
    pub questions: u32,
    pub script: Script,
}

/// The analyzer's verdict on one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub pattern: Pattern,
    /// 0..1.
    pub complexity: f64,
    pub tier: Tier,
    pub features: Features,
    /// Every pattern that scored, for explanations.
    pub scores: BTreeMap<Pattern, f64>,
    /// The prompt's hashed n-gram features ([`crate::features::featurize`]).
    pub prompt_features: Vec<u32>,
}

const HEAD_BYTES: usize = 4096;
const TAIL_BYTES: usize = 1024;
const MIN_PATTERN_SCORE: f64 = 1.0;
const SHORT_PROMPT_CHARS: usize = 80;

#[derive(Clone, Copy)]
enum Signal {
    Pattern(Pattern, f64),
    MultiStep,
    Constraint,
    /// Code syntax: counts toward code and code depth.
    CodeSyntax,
    /// Math notation: counts toward math and math density.
    MathNotation,
    /// A question about an amount ("how many", "how much"): with several numbers in the prompt,
    /// the mark of a word problem.
    Quantity,
}

/// A cue phrase. `word` cues must stand between non-alphanumeric characters.
struct Cue {
    text: &'static str,
    word: bool,
    signal: Signal,
}

const fn w(text: &'static str, pattern: Pattern, weight: f64) -> Cue {
    Cue {
        text,
        word: true,
        signal: Signal::Pattern(pattern, weight),
    }
}

/// A sub-word cue (matches inside words; for non-ASCII scripts and symbols).
const fn s(text: &'static str, signal: Signal) -> Cue {
    Cue {
        text,
        word: false,
        signal,
    }
}

const fn k(text: &'static str, signal: Signal) -> Cue {
    Cue {
        text,
        word: true,
        signal,
    }
}

use Pattern as P;
use Signal::{CodeSyntax, Constraint, MathNotation, MultiStep, Quantity};

#[rustfmt::skip]
const CUES: &[Cue] = &[
    // code
    w("code", P::Code, 1.0), w("function", P::Code, 1.0), w("bug", P::Code, 1.2),
    w("debug", P::Code, 1.5), w("compile", P::Code, 1.5), w("compiler", P::Code, 1.5),
    w("stack trace", P::Code, 2.0), w("traceback", P::Code, 2.0), w("refactor", P::Code, 2.0),
    w("implement", P::Code, 1.0), w("unit test", P::Code, 1.5), w("python", P::Code, 1.5),
    w("rust", P::Code, 1.2), w("javascript", P::Code, 1.5), w("typescript", P::Code, 1.5),
    w("java", P::Code, 1.2), w("golang", P::Code, 1.5), w("c++", P::Code, 1.5),
    w("sql", P::Code, 1.5), w("regex", P::Code, 1.5), w("api", P::Code, 0.5),
    w("script", P::Code, 0.8), w("class", P::Code, 0.5), w("method", P::Code, 0.5),
    w("algorithm", P::Code, 1.0), w("segfault", P::Code, 2.0), w("exception", P::Code, 1.0),
    w("dockerfile", P::Code, 1.5), w("kubernetes", P::Code, 1.0), w("bash", P::Code, 1.2),
    w("html", P::Code, 1.0), w("css", P::Code, 1.0), w("endpoint", P::Code, 0.8),
    s("```", CodeSyntax), s("::", CodeSyntax), s("->", CodeSyntax), s("=>", CodeSyntax),
    s("();", CodeSyntax), s("){", CodeSyntax), s(") {", CodeSyntax), s("#include", CodeSyntax),
    s("console.log", CodeSyntax), s("println!", CodeSyntax), s("</", CodeSyntax),
    k("def", CodeSyntax), k("fn", CodeSyntax), k("impl", CodeSyntax), k("import", CodeSyntax),
    k("return", CodeSyntax), k("const", CodeSyntax), k("let mut", CodeSyntax),
    k("public static", CodeSyntax), k("select *", CodeSyntax), k("from", CodeSyntax),
    // math
    w("solve", P::Math, 1.5), w("equation", P::Math, 2.0), w("integral", P::Math, 2.0),
    w("derivative", P::Math, 2.0), w("calculate", P::Math, 1.5), w("compute", P::Math, 1.0),
    w("probability", P::Math, 1.5), w("theorem", P::Math, 2.0), w("prove", P::Math, 1.0),
    w("matrix", P::Math, 1.2), w("polynomial", P::Math, 2.0), w("sum of", P::Math, 1.0),
    w("percent", P::Math, 0.8), w("algebra", P::Math, 1.5),
    w("geometry", P::Math, 1.5), w("triangle", P::Math, 1.0), w("fraction", P::Math, 1.2),
    w("average", P::Math, 0.6), w("factorial", P::Math, 2.0), w("prime", P::Math, 1.0),
    w("limit", P::Math, 0.5), w("eigenvalue", P::Math, 2.0), w("simplify", P::Math, 1.0),
    s("\\frac", MathNotation), s("\\int", MathNotation), s("\\sum", MathNotation),
    k("how many", Quantity), k("how much", Quantity), k("how long", Quantity),
    k("how far", Quantity), k("how old", Quantity), k("how fast", Quantity),
    k("in total", Quantity), k("altogether", Quantity),
    // Word problems ask for amounts in other words too.
    k("percent", Quantity), k("percentage", Quantity), k("discount", Quantity),
    k("profit", Quantity), k("per hour", Quantity), k("per day", Quantity),
    k("per week", Quantity), k("per month", Quantity), k("per year", Quantity),
    k("times as", Quantity), k("twice as", Quantity), k("half as", Quantity),
    k("rate of", Quantity), k("in all", Quantity),
    s("\\sqrt", MathNotation), s("$$", MathNotation), s("∫", MathNotation), s("∑", MathNotation),
    s("√", MathNotation), s("π", MathNotation), s("≤", MathNotation), s("≥", MathNotation),
    s("±", MathNotation), s("×", MathNotation), s("÷", MathNotation), s("²", MathNotation),
    // reasoning
    w("why", P::Reasoning, 0.8), w("explain why", P::Reasoning, 1.5),
    w("compare", P::Reasoning, 1.2), w("pros and cons", P::Reasoning, 2.0),
    w("trade-off", P::Reasoning, 1.5), w("tradeoff", P::Reasoning, 1.5),
    w("analyze", P::Reasoning, 1.2), w("analyse", P::Reasoning, 1.2),
    w("evaluate", P::Reasoning, 1.0), w("should i", P::Reasoning, 1.2),
    w("what would happen", P::Reasoning, 1.5), w("implications", P::Reasoning, 1.2),
    w("puzzle", P::Reasoning, 2.0), w("riddle", P::Reasoning, 2.0), w("logic", P::Reasoning, 1.2),
    w("deduce", P::Reasoning, 1.5), w("reason about", P::Reasoning, 1.5),
    w("argument", P::Reasoning, 1.0), w("strategy", P::Reasoning, 0.8),
    w("decide", P::Reasoning, 0.8), w("justify", P::Reasoning, 1.2),
    // Logic puzzles and syllogisms, however their nouns read.
    w("if all", P::Reasoning, 1.5), w("are all", P::Reasoning, 0.8), w("therefore", P::Reasoning, 1.0),
    w("must be true", P::Reasoning, 2.0), w("true or false", P::Reasoning, 1.5),
    w("true, false, or uncertain", P::Reasoning, 2.0), w("does it follow", P::Reasoning, 2.0),
    w("does not belong", P::Reasoning, 2.0), w("odd one out", P::Reasoning, 2.0),
    w("relationship between", P::Reasoning, 1.0), w("what could be the reason", P::Reasoning, 1.5),
    w("each own", P::Reasoning, 1.5), w("each have", P::Reasoning, 1.0),
    w("a different", P::Reasoning, 0.6), w("who owns", P::Reasoning, 1.0),
    w("statements", P::Reasoning, 1.0), w("conclude", P::Reasoning, 1.2),
    w("conclusion", P::Reasoning, 1.0), w("discuss", P::Reasoning, 1.0),
    // creative
    w("poem", P::Creative, 2.5), w("story", P::Creative, 2.0), w("haiku", P::Creative, 2.5),
    w("song", P::Creative, 1.5), w("lyrics", P::Creative, 2.0), w("limerick", P::Creative, 2.5),
    w("imagine", P::Creative, 1.2), w("fiction", P::Creative, 1.5), w("slogan", P::Creative, 2.0),
    w("tagline", P::Creative, 2.0), w("creative", P::Creative, 1.5), w("character", P::Creative, 0.8),
    w("screenplay", P::Creative, 2.5), w("brainstorm", P::Creative, 1.5), w("rhyme", P::Creative, 1.5),
    w("write a", P::Creative, 0.5), w("novel", P::Creative, 1.0), w("plot", P::Creative, 0.8),
    // Writing to a form, and role play.
    w("blog post", P::Creative, 2.0), w("compose", P::Creative, 1.2), w("craft", P::Creative, 1.0),
    w("essay", P::Creative, 1.5), w("headline", P::Creative, 1.5), w("persuasive", P::Creative, 1.5),
    w("short story", P::Creative, 2.5), w("paragraph about", P::Creative, 1.2),
    w("cover letter", P::Creative, 2.0), w("speech", P::Creative, 1.2), w("vivid", P::Creative, 1.0),
    w("write an email", P::Creative, 1.5), w("draft an email", P::Creative, 1.5),
    w("email to", P::Creative, 1.0), w("pretend", P::Creative, 2.0), w("role of", P::Creative, 1.5),
    w("act as", P::Creative, 1.5), w("persona", P::Creative, 2.0),
    w("imagine you are", P::Creative, 1.5), w("imagine yourself", P::Creative, 1.5),
    w("embody", P::Creative, 1.5), w("roleplay", P::Creative, 2.5), w("role-play", P::Creative, 2.5),
    w("in character", P::Creative, 1.5),
    // factual
    w("what is", P::Factual, 0.8), w("what are", P::Factual, 0.6), w("who is", P::Factual, 1.2),
    w("who was", P::Factual, 1.2), w("when did", P::Factual, 1.2), w("when was", P::Factual, 1.2),
    w("where is", P::Factual, 1.0), w("capital of", P::Factual, 2.0), w("define", P::Factual, 1.2),
    w("definition", P::Factual, 1.2), w("population of", P::Factual, 2.0),
    w("how tall", P::Factual, 1.5), w("how old", P::Factual, 1.2), w("fact", P::Factual, 0.8),
    w("history of", P::Factual, 1.0), w("invented", P::Factual, 1.2), w("meaning of", P::Factual, 1.0),
    // Who made what, and when.
    w("who wrote", P::Factual, 1.5), w("who painted", P::Factual, 1.5),
    w("who discovered", P::Factual, 1.5), w("who directed", P::Factual, 1.5),
    w("who composed", P::Factual, 1.5), w("who founded", P::Factual, 1.5),
    w("who named", P::Factual, 1.2), w("in what year", P::Factual, 1.5),
    w("which year", P::Factual, 1.2), w("what year", P::Factual, 1.2),
    w("concept of", P::Factual, 1.0), w("the process of", P::Factual, 1.0),
    w("describe the", P::Factual, 0.8), w("explain", P::Factual, 0.6),
    // summarization
    w("summarize", P::Summarization, 3.0), w("summarise", P::Summarization, 3.0),
    w("summary", P::Summarization, 2.5), w("tl;dr", P::Summarization, 3.0), w("tldr", P::Summarization, 3.0),
    w("key points", P::Summarization, 2.0), w("main points", P::Summarization, 2.0),
    w("condense", P::Summarization, 2.0), w("in a nutshell", P::Summarization, 2.0),
    w("recap", P::Summarization, 2.0), w("shorten", P::Summarization, 1.5),
    w("abstract", P::Summarization, 0.8), w("résumé", P::Summarization, 1.5),
    s("zusammenfass", Signal::Pattern(P::Summarization, 3.0)),
    s("总结", Signal::Pattern(P::Summarization, 3.0)), s("要約", Signal::Pattern(P::Summarization, 3.0)),
    // translation
    w("translate", P::Translation, 3.5), w("translation", P::Translation, 3.0),
    w("into english", P::Translation, 2.0), w("into french", P::Translation, 2.0),
    w("into spanish", P::Translation, 2.0), w("into german", P::Translation, 2.0),
    w("into japanese", P::Translation, 2.0), w("into chinese", P::Translation, 2.0),
    w("to english", P::Translation, 1.5), w("to french", P::Translation, 1.5),
    w("to spanish", P::Translation, 1.5), w("to german", P::Translation, 1.5),
    w("in french", P::Translation, 0.8), w("in spanish", P::Translation, 0.8),
    s("tradu", Signal::Pattern(P::Translation, 3.0)), s("übersetz", Signal::Pattern(P::Translation, 3.5)),
    s("翻译", Signal::Pattern(P::Translation, 3.5)), s("翻訳", Signal::Pattern(P::Translation, 3.5)),
    s("переведи", Signal::Pattern(P::Translation, 3.5)), s("перевод", Signal::Pattern(P::Translation, 3.0)),
    // extraction
    w("extract", P::Extraction, 3.0), w("list all", P::Extraction, 1.5), w("pull out", P::Extraction, 2.0),
    w("parse", P::Extraction, 1.2), w("find all", P::Extraction, 1.5), w("identify all", P::Extraction, 1.5),
    w("named entities", P::Extraction, 2.5), w("email addresses", P::Extraction, 1.5),
    w("phone numbers", P::Extraction, 1.5), w("as json", P::Extraction, 1.5),
    w("json with", P::Extraction, 1.5), w("fields", P::Extraction, 0.8), w("table of", P::Extraction, 0.8),
    w("classify", P::Extraction, 1.2), w("label", P::Extraction, 0.6), w("sentiment", P::Extraction, 1.5),
    w("from the following", P::Extraction, 0.8), w("from this text", P::Extraction, 1.2),
    // Pulling structured facts out of a given text.
    w("list every", P::Extraction, 1.5), w("mentioned in", P::Extraction, 1.5),
    w("identify the", P::Extraction, 1.0), w("json format", P::Extraction, 1.5),
    w("in json", P::Extraction, 1.2), w("json dictionary", P::Extraction, 1.5),
    w("csv", P::Extraction, 1.0), w("count how many times", P::Extraction, 2.0),
    w("assign them", P::Extraction, 1.2), w("categorize", P::Extraction, 1.5),
    w("categorise", P::Extraction, 1.5), w("given the following", P::Extraction, 0.8),
    w("in this paragraph", P::Extraction, 1.0), w("in the following text", P::Extraction, 1.2),
    w("the following information", P::Extraction, 1.2), w("on a scale of", P::Extraction, 1.2),
    // chat
    w("hi", P::Chat, 1.5), w("hello", P::Chat, 1.5), w("hey", P::Chat, 1.5), w("thanks", P::Chat, 1.2),
    w("thank you", P::Chat, 1.2), w("how are you", P::Chat, 2.0), w("good morning", P::Chat, 2.0),
    w("what's up", P::Chat, 1.5), w("nice to meet", P::Chat, 2.0), w("lol", P::Chat, 1.0),
    w("bonjour", P::Chat, 1.5), w("hola", P::Chat, 1.5), s("你好", Signal::Pattern(P::Chat, 1.5)),
    s("こんにちは", Signal::Pattern(P::Chat, 1.5)), s("привет", Signal::Pattern(P::Chat, 1.5)),
    // multi-step
    k("step by step", MultiStep), k("step-by-step", MultiStep), k("first", MultiStep),
    k("then", MultiStep), k("finally", MultiStep), k("afterwards", MultiStep),
    k("next,", MultiStep), k("and then", MultiStep), k("walk me through", MultiStep),
    k("multi-step", MultiStep), k("in detail", MultiStep), k("thoroughly", MultiStep),
    s("\n1.", MultiStep), s("\n2.", MultiStep), s("\n3.", MultiStep), s("\n- ", MultiStep),
    // constraints
    k("must", Constraint), k("should", Constraint), k("at least", Constraint),
    k("at most", Constraint), k("no more than", Constraint), k("exactly", Constraint),
    k("without", Constraint), k("do not", Constraint), k("don't", Constraint),
    k("ensure", Constraint), k("make sure", Constraint), k("only", Constraint),
    k("within", Constraint), k("under", Constraint), k("format", Constraint),
    k("constraint", Constraint), k("requirement", Constraint), k("edge case", Constraint),
    k("o(n)", Constraint), k("o(log n)", Constraint), k("thread-safe", Constraint),
];

static MATCHER: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(CUES.iter().map(|c| c.text))
        .ok()
});

/// The analyzer. Stateless; construct once or use [`QueryPatternAnalyzer::default`].
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryPatternAnalyzer;

impl QueryPatternAnalyzer {
    pub fn new() -> Self {
        Self
    }

    /// Analyzes `prompt`. Never fails: empty or odd input is `other`/`chat` of low complexity.
    pub fn analyze(&self, prompt: &str) -> Analysis {
        let text = prompt.trim();
        let whole = scan_whole(text);
        let (head, tail) = windows(text);

        let mut scores = [0.0f64; Pattern::ALL.len()];
        let mut counts = Counts::default();
        let mut hits = vec![0u8; CUES.len()];
        for window in [head, tail].into_iter().flatten() {
            scan_cues(window, &mut scores, &mut counts, &mut hits);
            counts.math_ops += count_math_ops(window);
            counts.numbers += count_numbers(window);
            counts.questions += window.bytes().filter(|b| *b == b'?').count() as u32;
        }

        // Structure.
        let code_fences = counts.fences / 2 + counts.fences % 2;
        scores[P::Code.index()] += 3.0 * code_fences as f64 + 0.6 * counts.code.min(8) as f64;
        scores[P::Math.index()] +=
            0.8 * counts.math_ops.min(6) as f64 + 1.2 * counts.math_notation.min(5) as f64;
        if whole.chars > 1500 && scores[P::Summarization.index()] > 0.0 {
            scores[P::Summarization.index()] += 1.5;
        }
        if whole.chars < 200 && counts.questions > 0 && starts_with_wh(text) {
            scores[P::Factual.index()] += 0.7;
        }
        scores[P::Math.index()] += 0.6 * counts.quantity.min(2) as f64;
        // A word problem: several quantities and a question about an amount ("She sells 16
        // eggs a day at $2 each. How much does she make?") is math however it is worded.
        if counts.numbers >= 2 && counts.quantity > 0 {
            scores[P::Math.index()] += 1.0 + 0.25 * counts.numbers.min(8) as f64;
        }
        // A short prompt built around arithmetic ("What is 2+2?") is math, whatever its wording.
        if whole.chars < 200 && counts.math_ops > 0 {
            scores[P::Math.index()] += 1.0;
        }

        let pattern = pick(&scores, whole.chars);
        let features = Features {
            chars: whole.chars,
            est_tokens: whole.est_tokens,
            code_fences,
            code_cues: counts.code,
            math_cues: counts.math_ops + counts.math_notation,
            multi_step_cues: counts.multi_step,
            constraint_cues: counts.constraint,
            questions: counts.questions,
            script: whole.script,
        };
        let complexity = complexity(pattern, &features);
        Analysis {
            pattern,
            complexity,
            tier: Tier::of(complexity),
            scores: Pattern::ALL
                .into_iter()
                .filter(|p| scores[p.index()] > 0.0)
                .map(|p| (p, round2(scores[p.index()])))
                .collect(),
            features,
            prompt_features: crate::features::featurize(text),
        }
    }
}

#[derive(Default)]
struct Counts {
    fences: u32,
    code: u32,
    math_ops: u32,
    /// Numbers written with digits.
    numbers: u32,
    quantity: u32,
    math_notation: u32,
    multi_step: u32,
    constraint: u32,
    questions: u32,
}

struct Whole {
    chars: usize,
    est_tokens: u64,
    script: Script,
}

/// Counts ASCII bytes and non-ASCII characters (leading bytes of multi-byte characters;
/// continuation bytes are 0b10xx_xxxx).
fn ascii_split(text: &str) -> (usize, usize) {
    let bytes = text.as_bytes();
    let ascii = bytes.iter().filter(|b| b.is_ascii()).count();
    let non_ascii = bytes.iter().filter(|b| **b >= 0xC0).count();
    (ascii, non_ascii)
}

/// The token estimate the router uses: ASCII bytes / 4 + 0.75 per non-ASCII character.
pub fn estimate_tokens(text: &str) -> u64 {
    let (ascii, non_ascii) = ascii_split(text);
    (ascii as f64 / 4.0 + non_ascii as f64 * 0.75).ceil() as u64
}

/// One byte pass over the whole text: characters, estimated tokens, dominant script.
fn scan_whole(text: &str) -> Whole {
    let (ascii, non_ascii) = ascii_split(text);
    let est_tokens = (ascii as f64 / 4.0 + non_ascii as f64 * 0.75).ceil() as u64;

    let mut script = Script::Latin;
    if non_ascii * 4 > ascii.max(1) {
        // Non-ASCII letters dominate: find out which script, from a bounded sample.
        let (mut cjk, mut cyr, mut arab, mut other) = (0u32, 0u32, 0u32, 0u32);
        for c in text.chars().filter(|c| !c.is_ascii()).take(2000) {
            match c as u32 {
                0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF => cjk += 1,
                0x0400..=0x04FF => cyr += 1,
                0x0600..=0x06FF => arab += 1,
                0x00C0..=0x024F => {}
                _ => other += 1,
            }
        }
        let best = cjk.max(cyr).max(arab).max(other);
        script = if best == 0 {
            Script::Latin
        } else if best == cjk {
            Script::Cjk
        } else if best == cyr {
            Script::Cyrillic
        } else if best == arab {
            Script::Arabic
        } else {
            Script::Other
        };
    }
    Whole {
        chars: ascii + non_ascii,
        est_tokens,
        script,
    }
}

/// The head and (if the text is longer) the tail windows, on character boundaries.
fn windows(text: &str) -> (Option<&str>, Option<&str>) {
    if text.len() <= HEAD_BYTES + TAIL_BYTES {
        return (Some(text), None);
    }
    let mut head_end = HEAD_BYTES;
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - TAIL_BYTES;
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    (Some(&text[..head_end]), Some(&text[tail_start..]))
}

fn scan_cues(window: &str, scores: &mut [f64], counts: &mut Counts, hits: &mut [u8]) {
    let Some(matcher) = MATCHER.as_ref() else {
        return;
    };
    let bytes = window.as_bytes();
    for m in matcher.find_iter(window) {
        let cue = &CUES[m.pattern().as_usize()];
        if cue.word && !(boundary(bytes, m.start().wrapping_sub(1)) && boundary(bytes, m.end())) {
            continue;
        }
        let seen = &mut hits[m.pattern().as_usize()];
        if *seen >= 2 {
            continue;
        }
        *seen += 1;
        match cue.signal {
            Signal::Pattern(p, weight) => scores[p.index()] += weight,
            Signal::MultiStep => counts.multi_step += 1,
            Signal::Constraint => counts.constraint += 1,
            Signal::CodeSyntax if cue.text == "```" => counts.fences += 1,
            Signal::CodeSyntax => counts.code += 1,
            Signal::MathNotation => counts.math_notation += 1,
            Signal::Quantity => counts.quantity += 1,
        }
    }
}

/// True when byte `i` is outside the text or not part of an ASCII word.
fn boundary(bytes: &[u8], i: usize) -> bool {
    bytes
        .get(i)
        .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
}

/// Counts `digit op digit` runs (spaces allowed around the operator): `3 + 4`, `2x^2`, `10/5`.
fn count_math_ops(window: &str) -> u32 {
    let b = window.as_bytes();
    let mut n = 0;
    for (i, &c) in b.iter().enumerate() {
        if !matches!(c, b'+' | b'-' | b'*' | b'/' | b'=' | b'^') {
            continue;
        }
        let before = b[..i].iter().rev().find(|x| **x != b' ');
        let after = b[i + 1..].iter().find(|x| **x != b' ');
        let operand = |x: Option<&u8>| x.is_some_and(|x| x.is_ascii_digit());
        let var = |x: Option<&u8>| x.is_some_and(|x| x.is_ascii_alphanumeric() || *x == b'(');
        if (operand(before) && var(after)) || (var(before) && operand(after)) {
            n += 1;
        }
    }
    n
}

/// Counts numbers written with digits (`16`, `$2`, `3.5`, `1,000` each count once).
fn count_numbers(window: &str) -> u32 {
    let b = window.as_bytes();
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            n += 1;
            while i < b.len()
                && (b[i].is_ascii_digit()
                    || (matches!(b[i], b'.' | b',')
                        && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
            {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    n
}

fn starts_with_wh(text: &str) -> bool {
    let first: String = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(
        first.as_str(),
        "what" | "who" | "when" | "where" | "which" | "whose" | "how" | "is" | "are" | "does"
    )
}

fn pick(scores: &[f64], chars: usize) -> Pattern {
    let mut best = (Pattern::Other, 0.0);
    for p in Pattern::PRIORITY {
        let s = scores[p.index()];
        if s > best.1 {
            best = (p, s);
        }
    }
    if best.1 >= MIN_PATTERN_SCORE {
        best.0
    } else if chars <= SHORT_PROMPT_CHARS && chars > 0 {
        Pattern::Chat
    } else {
        Pattern::Other
    }
}

/// Saturating 0..1 ramp: 0 at 0, 1 at `full`.
fn ramp(x: f64, full: f64) -> f64 {
    (x / full).clamp(0.0, 1.0)
}

fn complexity(pattern: Pattern, f: &Features) -> f64 {
    let length = ((1.0 + f.est_tokens as f64).ln() / (1.0 + 4000.0f64).ln()).clamp(0.0, 1.0);
    let base = match pattern {
        P::Math | P::Reasoning => 0.12,
        P::Code => 0.10,
        P::Creative => 0.03,
        _ => 0.0,
    };
    let score = base
        + 0.25 * length
        + 0.22 * ramp(f.multi_step_cues as f64, 4.0)
        + 0.18 * ramp(f.constraint_cues as f64, 4.0)
        + 0.10 * ramp((f.code_cues + 3 * f.code_fences) as f64, 8.0)
        + 0.10 * ramp(f.math_cues as f64, 5.0)
        + 0.05 * ramp(f.questions.saturating_sub(1) as f64, 3.0)
        + if f.script == Script::Latin { 0.0 } else { 0.05 };
    round2(score.clamp(0.0, 1.0))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyze(prompt: &str) -> Analysis {
        QueryPatternAnalyzer::new().analyze(prompt)
    }

    #[test]
    fn classifies_real_looking_prompts() {
        let table: &[(Pattern, &str)] = &[
            (
                P::Code,
                "Write a Python function that merges two sorted lists in O(n).",
            ),
            (
                P::Code,
                "```rust\nfn main() { let v: Vec<i32> = vec![]; println!(\"{:?}\", v); }\n```\nWhy does this not compile?",
            ),
            (
                P::Code,
                "I get a TypeError traceback when calling my endpoint: `TypeError: undefined is not a function` in handler.js. How do I debug it?",
            ),
            (
                P::Code,
                "Refactor this SQL query to avoid the N+1 problem: SELECT * FROM orders WHERE user_id = ?",
            ),
            (P::Code, "def add(a, b):\n    return a - b\n\nFix the bug."),
            (P::Math, "Solve for x: 3x + 7 = 22"),
            (P::Math, "What is 2+2?"),
            (P::Math, "How much is 17 * 23?"),
            (
                P::Math,
                "A baker sells 12 loaves a day at $3 each and 5 cakes at $10 each. How much \
                 does she earn in a week?",
            ),
            (P::Math, "What is the integral of x^2 * sin(x) dx?"),
            (
                P::Math,
                "Compute \\frac{d}{dx} \\sqrt{1 + x^2} and simplify.",
            ),
            (
                P::Math,
                "A train travels 120 km in 1.5 hours. Calculate its average speed in km/h.",
            ),
            (
                P::Reasoning,
                "Compare microservices and a monolith for a 5-person startup. What are the pros and cons, and which should I choose?",
            ),
            (
                P::Reasoning,
                "Three boxes are mislabeled: apples, oranges, mixed. You may pick one fruit from one box. Solve this puzzle and explain why it works.",
            ),
            (
                P::Reasoning,
                "Explain why the Roman Empire fell, and analyze which factor mattered most.",
            ),
            (P::Creative, "Write a haiku about autumn rain in Kyoto."),
            (
                P::Creative,
                "Write a short story about a robot who learns to paint.",
            ),
            (
                P::Creative,
                "Brainstorm ten catchy slogans for a vegan bakery.",
            ),
            (P::Factual, "What is the capital of Australia?"),
            (P::Factual, "Who was the first woman to win a Nobel Prize?"),
            // Tried by a new user (issue 19): labels that were chat/other before.
            (P::Factual, "Who wrote 'One Hundred Years of Solitude'?"),
            (
                P::Reasoning,
                "If all bloops are razzies and all razzies are lazzies, are all bloops lazzies?",
            ),
            (
                P::Reasoning,
                "Three friends each own a different pet: a cat, a dog and a fish. Anna does not \
                 own the cat. Ben owns the dog. Who owns the fish?",
            ),
            (
                P::Extraction,
                "List every person's name mentioned in this paragraph: Maria met John at the \
                 station, and later they called Dr. Okafor.",
            ),
            (
                P::Math,
                "Kyle bought a book for $19.50 with a 25% discount from the original price. What \
                 was the original price?",
            ),
            (
                P::Creative,
                "Pretend to be a pirate captain and greet the new crew in character.",
            ),
            (P::Factual, "When did the Berlin Wall fall?"),
            (
                P::Summarization,
                "Summarize the following article in three bullet points:\n\nThe city council met on Tuesday to discuss the new budget. After hours of debate, members agreed to increase funding for public transport while cutting administrative costs.",
            ),
            (
                P::Summarization,
                "TL;DR of this thread please: people argued about tabs versus spaces for 200 comments.",
            ),
            (
                P::Translation,
                "Translate into French: 'The meeting has been moved to Thursday.'",
            ),
            (
                P::Translation,
                "Traduce al inglés: ¿Dónde está la biblioteca?",
            ),
            (P::Translation, "请把这句话翻译成英文：今天天气很好。"),
            (
                P::Translation,
                "Bitte übersetze diesen Satz ins Englische: Ich habe keine Zeit.",
            ),
            (
                P::Extraction,
                "Extract all email addresses and phone numbers from the following text: Contact john@example.com or call 555-0134.",
            ),
            (
                P::Extraction,
                "From this text, pull out the company names and return them as JSON with fields name and country.",
            ),
            (
                P::Extraction,
                "Classify the sentiment of each review as positive, negative or neutral.",
            ),
            (P::Chat, "hi there!"),
            (P::Chat, "Thanks, that helped a lot"),
            (P::Chat, "Hello, how are you today?"),
            (P::Chat, "你好"),
            (
                P::Other,
                "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua ut enim ad minim veniam.",
            ),
        ];
        let mut wrong = Vec::new();
        for (want, prompt) in table {
            let got = analyze(prompt);
            if got.pattern != *want {
                wrong.push(format!(
                    "{want} ≠ {} ({:?}): {prompt}",
                    got.pattern, got.scores
                ));
            }
        }
        assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
    }

    #[test]
    fn complexity_grows_with_the_task() {
        let easy = analyze("What is the capital of France?");
        let hard = analyze(
            "Design a thread-safe LRU cache in Rust. First, explain the data structures; then \
             implement it step by step. It must support get and put in O(1), must not use \
             unsafe code, and should handle at least 1 million entries. Finally, write unit \
             tests covering every edge case.\n```rust\nstruct Lru<K, V> { map: HashMap<K, V> }\n```",
        );
        assert_eq!(easy.tier, Tier::Low, "{easy:?}");
        assert_eq!(hard.tier, Tier::High, "{hard:?}");
        assert!(hard.complexity > easy.complexity + 0.3);
        for a in [&easy, &hard] {
            assert!((0.0..=1.0).contains(&a.complexity));
        }
    }

    #[test]
    fn any_utf8_is_handled() {
        let empty = analyze("");
        assert_eq!(empty.pattern, P::Other);
        assert_eq!(empty.features.est_tokens, 0);
        assert_eq!(analyze("   \n\t ").pattern, P::Other);

        // 1 MB of mixed code, prose and multi-byte text, cut mid-character-safe windows.
        let chunk = "Das Ergebnis: ∑ résumé 総結 — let x = foo(); // 😀 mixed text\n";
        let big: String = chunk.repeat(1_000_000 / chunk.len() + 1);
        let a = analyze(&format!("Summarize this log:\n{big}"));
        assert!(a.features.chars > 500_000);
        assert!((0.0..=1.0).contains(&a.complexity));
        assert!(a.features.est_tokens > 100_000);

        // Non-English prompts get a script.
        assert_eq!(
            analyze("Объясни, почему небо голубое?").features.script,
            Script::Cyrillic
        );
        assert_eq!(
            analyze("なぜ空は青いのですか？").features.script,
            Script::Cjk
        );
        assert_eq!(
            analyze("Why is the sky blue?").features.script,
            Script::Latin
        );
    }

    #[test]
    fn analysis_is_deterministic() {
        let p = "Compare quicksort and mergesort, then implement the faster one in Go.";
        assert_eq!(analyze(p), analyze(p));
    }

    #[test]
    fn word_cues_do_not_match_inside_words() {
        // "hi" in "this"/"which", "sum of" vs "summary", "fn" in "often".
        let a = analyze("this which often");
        assert_eq!(a.scores.get(&P::Chat), None, "{a:?}");
        assert_eq!(a.features.code_cues, 0);
    }

    #[test]
    fn token_estimate_is_documented_rule() {
        let a = analyze(&"abcd".repeat(100));
        assert_eq!(a.features.est_tokens, 100);
        let a = analyze("日本語");
        assert_eq!(a.features.est_tokens, 3); // ceil(3 × 0.75)
    }
}
