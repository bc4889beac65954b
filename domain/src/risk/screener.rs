//! A deterministic, versioned screener over what the caller said, in English or Spanish.
//!
//! It reads concepts, not phrases (`lexicon.rs`): the words are normalised (case, apostrophes,
//! accents and speech-to-text spellings do not matter), stemmed, cut into clauses without relying
//! on punctuation, and matched against concept lexicons per C-SSRS item and per other kind of
//! danger. A match is then read in its clause: an idiom that only sounds like danger drops it; a
//! negation before it ("I would never hurt myself") drops it; a third person named before it
//! ("my son wants to die") makes it someone else's danger, which goes to a person too; and talk
//! of suicide in a safe context (the news, a film, a loss years ago) is dropped unless it is the
//! caller's own.
//!
//! Words it cannot read are *unknown*, never *none*: a language it does not cover, or too little
//! text to tell. It is a floor, not a clinician: it errs towards a person, and any change to its
//! lexicons or rules must change `SCREENER_VERSION`, which is stored with every assessment.

use std::collections::HashSet;
use std::sync::LazyLock;

use super::lexicon::{
    self, Entry, Who, ENGLISH_WORDS, FILLERS, FOREIGN_WORDS, IDIOMS, NEGATIONS, NEGATION_BARRIERS,
    NEGATION_REACH, NOT_NEGATIONS, NOT_SAFE, SAFE_CONTEXTS, SOON, SPANISH_WORDS,
};
use super::normalise::{fold, tokens, Token};
use super::pattern::{Lang, Pattern};
use super::{Language, RiskLevel, Screening, Signal, Unreadable};

/// Stored with every assessment so that any level can be traced to the rules that set it.
pub const SCREENER_VERSION: &str = "cssrs-screener-3";

struct Compiled {
    entries: Vec<(&'static Entry, Vec<Pattern>)>,
    idioms: Vec<Pattern>,
    safe: Vec<Pattern>,
    not_safe: Vec<Pattern>,
    not_negations: Vec<Pattern>,
    soon: Vec<Pattern>,
    /// Words only the Spanish lexicons use: a transcript with one of them is read in Spanish.
    spanish_words: HashSet<String>,
}

fn compile(table: &[(Lang, &'static str)]) -> Vec<Pattern> {
    table
        .iter()
        .map(|(lang, source)| Pattern::compile(source, *lang, lexicon::class))
        .collect()
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| Compiled {
    entries: lexicon::ENTRIES
        .iter()
        .map(|entry| {
            let patterns = entry
                .patterns
                .iter()
                .map(|p| Pattern::compile(p, entry.lang, lexicon::class))
                .collect();
            (entry, patterns)
        })
        .collect(),
    idioms: compile(IDIOMS),
    safe: compile(SAFE_CONTEXTS),
    not_safe: compile(NOT_SAFE),
    not_negations: compile(NOT_NEGATIONS),
    soon: compile(SOON),
    spanish_words: spanish_vocabulary(),
});

/// The words a lexicon's patterns are written with, class words included.
fn vocabulary(lang: Lang) -> HashSet<String> {
    let sources = lexicon::ENTRIES
        .iter()
        .filter(|entry| entry.lang == lang)
        .flat_map(|entry| entry.patterns.iter().copied())
        .chain(
            [IDIOMS, SAFE_CONTEXTS, NOT_SAFE, NOT_NEGATIONS, SOON]
                .into_iter()
                .flatten()
                .filter(|(l, _)| *l == lang)
                .map(|(_, source)| *source),
        );
    let mut words = HashSet::new();
    for source in sources {
        for piece in source.split([' ', '|', '_']) {
            let piece = piece.trim_start_matches(['=', '?']);
            match piece.strip_prefix('@') {
                Some(class) => words.extend(
                    lexicon::class(class)
                        .unwrap_or_default()
                        .iter()
                        .map(|w| fold(w)),
                ),
                None if piece.chars().all(char::is_alphanumeric) && !piece.is_empty() => {
                    words.insert(fold(piece));
                }
                None => {}
            }
        }
    }
    words
}

/// Spanish words of the lexicons and the function-word list that English does not use.
fn spanish_vocabulary() -> HashSet<String> {
    let english = vocabulary(Lang::En);
    vocabulary(Lang::Es)
        .into_iter()
        .chain(SPANISH_WORDS.iter().map(|w| (*w).to_owned()))
        .filter(|w| {
            !english.contains(w)
                && !ENGLISH_WORDS.contains(&w.as_str())
                && !NOT_SPANISH_MARKS.contains(&w.as_str())
                && w.len() > 1
                && !w.chars().all(|c| c.is_ascii_digit())
        })
        .collect()
}

/// Whose danger a match turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Caller,
    Other,
    /// No one is named: a topic ("suicide prevention"), or the caller by default.
    Unnamed,
}

/// One concept found in the words, after its clause was read.
#[derive(Debug, Clone, Copy)]
struct Finding {
    signal: Signal,
    subject: Subject,
    /// The match began with an intention ("going to", "will", "plan to").
    intended: bool,
}

const CALLER_WORDS: &[&str] = &[
    "i", "me", "my", "myself", "mine", "yo", "mi", "mis", "conmigo",
];
const OTHER_REFLEXIVES: &[&str] = &["himself", "herself", "themselves", "themself", "yourself"];
/// How far back, in words, the subject of a match is looked for.
const SUBJECT_REACH: usize = 12;
const TOPIC_WORDS: &[&str] = &[
    "about",
    "on",
    "of",
    "regarding",
    "sobre",
    "del",
    "de",
    "around",
];
const INTENTIONS: &[&str] = &[
    "going", "will", "plan", "planning", "gonna", "decided", "ready", "voy", "vamos",
];

fn spans(patterns: &[Pattern], tokens: &[Token], spanish: bool) -> Vec<(usize, usize)> {
    patterns
        .iter()
        .filter(|p| spanish || p.lang() == Lang::En)
        .flat_map(|p| p.find(tokens))
        .collect()
}

/// Spanish words that English speakers say too ("me", "son", "mama"): they do not mark Spanish.
const NOT_SPANISH_MARKS: &[&str] = &[
    "me", "son", "solo", "mama", "papa", "ya", "van", "hay", "este",
];

/// Whether Spanish patterns may read the words: Spanish stems are short, and English words
/// meet them by chance ("tired" stems like "tirarme"), so they read only words with some
/// Spanish in them (code-switching included).
fn has_spanish(tokens: &[Token], spanish_words: &HashSet<String>) -> bool {
    tokens.iter().any(|t| {
        let word = t.word.as_str();
        let reflexive_infinitive = word.len() > 5
            && ["arme", "erme", "irme", "arse", "erse", "irse"]
                .iter()
                .any(|end| word.ends_with(end));
        reflexive_infinitive || spanish_words.contains(word)
    })
}

fn overlaps((a, b): (usize, usize), (c, d): (usize, usize)) -> bool {
    a < d && c < b
}

/// Whether a break lies between positions `from` and `to` (exclusive of both).
fn crosses_break(tokens: &[Token], from: usize, to: usize) -> bool {
    tokens[from.min(to)..from.max(to)]
        .iter()
        .any(Token::is_break)
}

/// Screens one utterance.
pub fn screen(text: &str) -> Screening {
    let tokens = tokens(text);
    let compiled = &*COMPILED;
    let spanish = has_spanish(&tokens, &compiled.spanish_words);
    let idioms = spans(&compiled.idioms, &tokens, spanish);
    let not_negations = spans(&compiled.not_negations, &tokens, spanish);
    let safe_context = !spans(&compiled.safe, &tokens, spanish).is_empty()
        && spans(&compiled.not_safe, &tokens, spanish).is_empty();
    let soon = !spans(&compiled.soon, &tokens, spanish).is_empty();

    let mut hits: Vec<(&Entry, &Pattern, (usize, usize))> = Vec::new();
    for (entry, patterns) in &compiled.entries {
        if entry.lang == Lang::Es && !spanish {
            continue;
        }
        for pattern in patterns {
            for span in pattern.find(&tokens) {
                if idioms.iter().any(|idiom| overlaps(*idiom, span)) {
                    continue;
                }
                hits.push((entry, pattern, span));
            }
        }
    }

    let findings: Vec<Finding> = hits
        .iter()
        .filter(|(_, pattern, span)| !negated(&tokens, pattern, *span, &not_negations))
        .filter_map(|(entry, _, span)| {
            let subject = subject_of(entry, &tokens, *span);
            if entry.who == Who::Own && subject == Subject::Other {
                return None;
            }
            // Said of the caller ("i wish i could sleep and not wake up"), words that would be
            // someone else's emergency are the caller's talk of dying; the caller's own
            // lexicons set the level.
            let signal = if entry.signal == Signal::ThirdPartyDanger && subject == Subject::Caller {
                Signal::WishToBeDead
            } else {
                entry.signal
            };
            let topic = span.0 > 0
                && TOPIC_WORDS.contains(&tokens[span.0 - 1].word.as_str())
                && subject != Subject::Caller;
            if safe_context && (subject == Subject::Other || topic || subject == Subject::Unnamed) {
                return None;
            }
            let before = &tokens[span.0.saturating_sub(3)..span.0];
            // "about to" is an intention; "thinking about" is not.
            let intended = (before.iter().any(|t| INTENTIONS.contains(&t.word.as_str()))
                || before
                    .windows(2)
                    .any(|w| w[0].word == "about" && w[1].word == "to"))
                && !crosses_break(&tokens, span.0.saturating_sub(3), span.0);
            Some(Finding {
                signal,
                subject,
                intended,
            })
        })
        .collect();

    let mut signals: Vec<Signal> = findings.iter().map(signal_of).collect();
    let caller_danger = findings
        .iter()
        .any(|f| f.subject != Subject::Other && is_self_danger(f.signal));
    let intent = findings.iter().any(|f| {
        f.subject != Subject::Other
            && f.intended
            && matches!(
                f.signal,
                Signal::ActiveThoughts | Signal::Method | Signal::Overdose | Signal::SelfHarm
            )
    });
    if intent {
        signals.push(Signal::Intent);
    }
    let acting = signals.iter().any(|s| {
        matches!(
            s,
            Signal::Intent
                | Signal::Plan
                | Signal::MeansAccess
                | Signal::Preparation
                | Signal::LethalSituation
                | Signal::Imminence
        )
    });
    if caller_danger && acting && soon {
        signals.push(Signal::Imminence);
    }
    signals.sort();
    signals.dedup();

    let language = language_of(&tokens);
    let risky = signals.iter().any(|s| s.is_risk());
    let unreadable = if risky {
        None
    } else if content_words(&tokens) < 2 {
        Some(Unreadable::TooLittleText)
    } else if language.is_none() {
        Some(Unreadable::UnsupportedLanguage)
    } else {
        None
    };
    Screening {
        level: level_of(&signals),
        signals,
        version: SCREENER_VERSION.to_owned(),
        language,
        unreadable,
    }
}

/// Whether a pattern spells out a negation of its own ("not want to live"), so that a negation
/// inside its match is part of what it says.
fn says_negation(pattern: &Pattern) -> bool {
    pattern
        .source
        .split(|c: char| !c.is_alphanumeric())
        .any(|word| NEGATIONS.contains(&word))
}

/// Whether a negation takes the match back: one in its clause shortly before it, or one a gap
/// of the pattern skipped ("my husband would never hurt me").
fn negated(
    tokens: &[Token],
    pattern: &Pattern,
    (start, end): (usize, usize),
    not_negations: &[(usize, usize)],
) -> bool {
    let is_negation = |i: usize| {
        NEGATIONS.contains(&tokens[i].word.as_str())
            && !not_negations.iter().any(|span| overlaps(*span, (i, i + 1)))
    };
    if !says_negation(pattern) && (start..end).any(is_negation) {
        return true;
    }
    let from = start.saturating_sub(NEGATION_REACH);
    (from..start).any(|i| {
        NEGATIONS.contains(&tokens[i].word.as_str())
            && !crosses_break(tokens, i, start)
            && !tokens[i + 1..=start]
                .iter()
                .any(|t| NEGATION_BARRIERS.contains(&t.word.as_str()))
            && !not_negations.iter().any(|span| overlaps(*span, (i, i + 1)))
            && !not_negations
                .iter()
                .any(|span| overlaps(*span, (start, end)))
    })
}

fn subject_of(entry: &Entry, tokens: &[Token], (start, end): (usize, usize)) -> Subject {
    match entry.who {
        Who::Caller => return Subject::Caller,
        Who::Other => return Subject::Other,
        Who::Subject | Who::Own => {}
    }
    let inside = &tokens[start..end];
    if inside
        .iter()
        .any(|t| OTHER_REFLEXIVES.contains(&t.word.as_str()))
    {
        return Subject::Other;
    }
    let others = lexicon::class("other").unwrap_or_default();
    let otros = lexicon::class("otro").unwrap_or_default();
    let is_other = |word: &str| others.contains(&word) || otros.contains(&word);
    // "my" before a person ("worried about my son") names that person, not the caller.
    if inside.iter().enumerate().any(|(i, t)| {
        CALLER_WORDS.contains(&t.word.as_str())
            && !inside.get(i + 1).is_some_and(|next| is_other(&next.word))
    }) {
        return Subject::Caller;
    }
    if inside.iter().any(|t| is_other(&t.word)) {
        return Subject::Other;
    }
    // A clause that names no one ("... and not wake up", "y no para de sangrar") goes on with
    // the subject of the clause before it, so the search reads on past a break.
    for token in tokens[..start].iter().rev().take(SUBJECT_REACH) {
        if token.is_break() {
            continue;
        }
        let word = token.word.as_str();
        // "an essay about suicide", "an article about veterans and suicide": a topic, whoever
        // is speaking.
        if TOPIC_WORDS.contains(&word) {
            return Subject::Unnamed;
        }
        if CALLER_WORDS.contains(&word) {
            return Subject::Caller;
        }
        if is_other(word) {
            return Subject::Other;
        }
    }
    Subject::Unnamed
}

/// Danger to the caller's own life or body.
fn is_self_danger(signal: Signal) -> bool {
    !matches!(
        signal,
        Signal::ProtectiveFactor
            | Signal::ConcernForOther
            | Signal::ThirdPartyDanger
            | Signal::HarmToOthers
            | Signal::DangerFromOthers
            | Signal::Psychosis
            | Signal::Hopelessness
    )
}

fn signal_of(finding: &Finding) -> Signal {
    if finding.subject != Subject::Other {
        return finding.signal;
    }
    match finding.signal {
        Signal::Hopelessness => Signal::ConcernForOther,
        signal if is_self_danger(signal) => Signal::ThirdPartyDanger,
        signal => signal,
    }
}

/// How urgent the signals are. Every level but none goes to a person; the level tells the
/// counselor how fast.
fn level_of(signals: &[Signal]) -> RiskLevel {
    let has = |s: Signal| signals.contains(&s);
    if has(Signal::Imminence) || has(Signal::LethalSituation) {
        RiskLevel::Imminent
    } else if [
        Signal::Intent,
        Signal::Plan,
        Signal::RecentBehaviour,
        Signal::Overdose,
        Signal::MeansAccess,
        Signal::ThirdPartyDanger,
        Signal::DangerFromOthers,
        Signal::HarmToOthers,
        Signal::Psychosis,
    ]
    .into_iter()
    .any(has)
    {
        RiskLevel::High
    } else if [
        Signal::ActiveThoughts,
        Signal::Method,
        Signal::SelfHarm,
        Signal::Preparation,
    ]
    .into_iter()
    .any(has)
    {
        RiskLevel::Moderate
    } else if [
        Signal::WishToBeDead,
        Signal::Hopelessness,
        Signal::ConcernForOther,
    ]
    .into_iter()
    .any(has)
    {
        RiskLevel::Low
    } else {
        RiskLevel::None
    }
}

fn content_words(tokens: &[Token]) -> usize {
    tokens
        .iter()
        .filter(|t| !t.is_break() && !FILLERS.contains(&t.word.as_str()))
        .count()
}

/// English, Spanish, or neither. Short utterances are read by their function words; longer ones
/// must also not look, to a trigram model, like a language the screener does not read.
fn language_of(tokens: &[Token]) -> Option<Language> {
    let words: Vec<&str> = tokens
        .iter()
        .filter(|t| !t.is_break())
        .map(|t| t.word.as_str())
        .collect();
    if words.is_empty() {
        return None;
    }
    if words.iter().any(|w| !w.is_ascii()) {
        // Folding removed the accents of Latin script; anything else left is another script.
        return None;
    }
    let count = |list: &[&str]| words.iter().filter(|w| list.contains(w)).count();
    let english = count(ENGLISH_WORDS);
    let spanish = count(SPANISH_WORDS);
    // Portuguese, Italian or French words read like Spanish ones to the lists above ("eu quero
    // me matar"): their own function words tell them apart.
    if count(FOREIGN_WORDS) >= english.max(spanish) {
        return None;
    }
    let share = |n: usize| n as f64 / words.len() as f64;
    let (language, known) = if english >= spanish {
        (Language::English, english)
    } else {
        (Language::Spanish, spanish)
    };
    if share(known) < 0.25 {
        return None;
    }
    if words.len() >= 5 && share(known) < 0.5 {
        let text = words.join(" ");
        if let Some(info) = whatlang::detect(&text) {
            let ours = matches!(info.lang(), whatlang::Lang::Eng | whatlang::Lang::Spa);
            if !ours && info.is_reliable() {
                return None;
            }
        }
    }
    Some(language)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(text: &str) -> RiskLevel {
        screen(text).level
    }

    fn person(text: &str) -> bool {
        screen(text).warrants_person()
    }

    #[test]
    fn passive_active_and_planned_risk_rise_in_level() {
        assert_eq!(
            level("i wish i could go to sleep and not wake up"),
            RiskLevel::Low
        );
        assert_eq!(
            level("I keep thinking about killing myself"),
            RiskLevel::Moderate
        );
        assert_eq!(
            level("im going to kill myself tonight"),
            RiskLevel::Imminent
        );
        assert_eq!(level("I took 30 tylenol"), RiskLevel::Imminent);
        assert_eq!(level("I had a hard day at work"), RiskLevel::None);
    }

    #[test]
    fn negations_take_risk_back_but_not_risk_said_in_negative_form() {
        assert!(!person("I'm not suicidal, I just need to vent about work."));
        assert!(!person("i would never hurt myself im just stressed"));
        assert!(person("i dont want to live anymore"));
        assert!(person("No. Nobody would miss me."));
        assert!(person("i am not suicidal but i want to die"));
    }

    #[test]
    fn idioms_are_not_danger() {
        assert!(!person("this commute is killing me"));
        assert!(!person("I'm dying to see that show"));
        assert!(!person("me muero de hambre"));
    }

    #[test]
    fn someone_else_s_danger_goes_to_a_person() {
        let screening = screen("my friend took a whole bottle of pills");
        assert!(screening.signals.contains(&Signal::ThirdPartyDanger));
        assert!(screening.level >= RiskLevel::High);
    }

    #[test]
    fn safe_talk_of_suicide_is_not_the_caller_s_risk() {
        assert!(!person(
            "I'm writing a school essay about suicide prevention."
        ));
        assert!(!person(
            "my uncle died by suicide fifteen years ago and ive made peace with it"
        ));
    }

    #[test]
    fn spanish_is_read_and_other_languages_are_unknown() {
        assert!(person("ya no quiero vivir"));
        assert_eq!(
            screen("me siento muy sola hoy").language,
            Some(Language::Spanish)
        );
        assert!(!person(
            "me siento muy sola hoy, necesito hablar con alguien"
        ));
        let french = screen("Je me sens très seul ce soir et je ne sais pas quoi faire");
        assert_eq!(french.unreadable, Some(Unreadable::UnsupportedLanguage));
        assert!(french.warrants_person());
    }

    #[test]
    fn too_little_text_is_unknown() {
        assert_eq!(screen("uh").unreadable, Some(Unreadable::TooLittleText));
        assert_eq!(screen("").unreadable, Some(Unreadable::TooLittleText));
    }

    #[test]
    fn the_result_names_its_version_and_is_deterministic() {
        let text = "i have pills saved up and im going to take them tonight";
        assert_eq!(screen(text), screen(text));
        assert_eq!(screen(text).version, SCREENER_VERSION);
    }
}
