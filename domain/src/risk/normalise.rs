//! Turns a transcript into the tokens the screener reads. Speech-to-text output is usually
//! lowercase and unpunctuated, and spells some words its own way, so nothing here relies on case,
//! apostrophes or commas: "im", "i'm" and "I’m" all become "i am"; accents are folded ("sí" and
//! "si" read alike); words speech-to-text splits or mishears are joined back ("my self", "sue
//! aside"). Each token carries its English and Spanish stems, so that "killing", "killed" and
//! "kills" meet "kill" without lists of inflections.

use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::UnicodeNormalization;

/// Marks the end of a clause: punctuation, or a word that starts a new one ("but", "pero").
pub(super) const BREAK: &str = "|";

/// Marks a comma: the end of a clause for negation and for whose words they are, but a pattern's
/// gap may cross it, since a comma often only sets off an aside ("I took his pills, all of them").
pub(super) const SOFT_BREAK: &str = ",";

/// Words that soften or stress without changing what is said ("i just really want to die"): a
/// pattern reads past them between two of its terms.
const HEDGES: &[&str] = &[
    "just",
    "really",
    "even",
    "honestly",
    "actually",
    "truly",
    "literally",
    "kinda",
    "sorta",
    "totally",
    "seriously",
    "fucking",
    "freaking",
    "frickin",
    "lowkey",
    "genuinely",
    "simply",
    "like",
    "um",
    "uh",
    "neta",
    "nomas",
    "realmente",
    "sinceramente",
];

/// One word of the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    /// The word, folded (lowercase, no accents, no apostrophes).
    pub word: String,
    pub en: String,
    pub es: String,
}

impl Token {
    /// Whether the token ends a clause (a comma included).
    pub(super) fn is_break(&self) -> bool {
        self.word == BREAK || self.word == SOFT_BREAK
    }

    /// Whether the token ends a clause for a pattern's gap too (a comma does not).
    pub(super) fn is_hard_break(&self) -> bool {
        self.word == BREAK
    }

    pub(super) fn is_hedge(&self) -> bool {
        HEDGES.contains(&self.word.as_str())
    }
}

static ENGLISH: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));
static SPANISH: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::Spanish));

/// Irregular English verb forms the stemmer leaves apart from their verb, so that a pattern's
/// "take" meets "took" and "taken", and "wake" meets "woke" and "woken".
const IRREGULAR: &[(&str, &str)] = &[
    ("took", "take"),
    ("taken", "take"),
    ("woke", "wake"),
    ("woken", "wake"),
    ("ate", "eat"),
    ("eaten", "eat"),
    ("drank", "drink"),
    ("swallowed", "swallow"),
    ("gave", "give"),
    ("given", "give"),
    ("wrote", "write"),
    ("written", "write"),
    ("bought", "buy"),
    ("hung", "hang"),
    ("shot", "shoot"),
    ("bled", "bleed"),
    ("fell", "fall"),
    ("fallen", "fall"),
    ("threw", "throw"),
    ("thrown", "throw"),
    ("drove", "drive"),
    ("driven", "drive"),
    ("broke", "break"),
    ("broken", "break"),
    ("thought", "think"),
    ("said", "say"),
    ("told", "tell"),
    ("hid", "hide"),
    ("hidden", "hide"),
    ("chose", "choose"),
    ("chosen", "choose"),
    ("stabbed", "stab"),
    ("ran", "run"),
    ("sought", "seek"),
    ("slit", "slit"),
];

pub(super) fn stem_en(word: &str) -> String {
    let word = IRREGULAR
        .iter()
        .find(|(form, _)| *form == word)
        .map_or(word, |(_, verb)| verb);
    ENGLISH.stem(word).into_owned()
}

pub(super) fn stem_es(word: &str) -> String {
    SPANISH.stem(word).into_owned()
}

/// Contractions, with or without their apostrophe (which speech-to-text often drops), chat
/// spellings, and words speech-to-text splits. Applied word by word, longest first.
const REWRITES: &[(&str, &str)] = &[
    ("i'm", "i am"),
    ("im", "i am"),
    ("i've", "i have"),
    ("ive", "i have"),
    ("i'll", "i will"),
    ("you'll", "you will"),
    ("youll", "you will"),
    ("he'll", "he will"),
    ("she'll", "she will"),
    ("they'll", "they will"),
    ("theyll", "they will"),
    ("we'll", "we will"),
    ("it'll", "it will"),
    ("itll", "it will"),
    ("i'd", "i would"),
    ("id", "i would"),
    ("can't", "can not"),
    ("cant", "can not"),
    ("cannot", "can not"),
    ("won't", "will not"),
    ("wont", "will not"),
    ("ain't", "am not"),
    ("aint", "am not"),
    ("don't", "do not"),
    ("dont", "do not"),
    ("doesn't", "does not"),
    ("doesnt", "does not"),
    ("didn't", "did not"),
    ("didnt", "did not"),
    ("wouldn't", "would not"),
    ("wouldnt", "would not"),
    ("couldn't", "could not"),
    ("couldnt", "could not"),
    ("shouldn't", "should not"),
    ("shouldnt", "should not"),
    ("isn't", "is not"),
    ("isnt", "is not"),
    ("aren't", "are not"),
    ("arent", "are not"),
    ("wasn't", "was not"),
    ("wasnt", "was not"),
    ("weren't", "were not"),
    ("werent", "were not"),
    ("haven't", "have not"),
    ("havent", "have not"),
    ("hasn't", "has not"),
    ("hasnt", "has not"),
    ("hadn't", "had not"),
    ("hadnt", "had not"),
    ("gonna", "going to"),
    ("wanna", "want to"),
    ("gotta", "got to"),
    ("tryna", "trying to"),
    ("finna", "going to"),
    ("ima", "i am going to"),
    ("imma", "i am going to"),
    ("boutta", "about to"),
    ("bouta", "about to"),
    ("dunno", "do not know"),
    ("idk", "i do not know"),
    ("he's", "he is"),
    ("she's", "she is"),
    ("it's", "it is"),
    ("that's", "that is"),
    ("thats", "that is"),
    ("there's", "there is"),
    ("theres", "there is"),
    ("they're", "they are"),
    ("theyre", "they are"),
    ("you're", "you are"),
    ("youre", "you are"),
    ("we're", "we are"),
    ("what's", "what is"),
    ("whats", "what is"),
    ("let's", "let us"),
    ("y'all", "you all"),
    ("u", "you"),
    ("ur", "your"),
    ("r", "are"),
    ("rn", "right now"),
    ("tn", "tonight"),
    ("2nite", "tonight"),
    ("tonite", "tonight"),
    ("tmrw", "tomorrow"),
    ("tmr", "tomorrow"),
    ("bc", "because"),
    ("cuz", "because"),
    ("coz", "because"),
    ("cause", "because"),
    ("ppl", "people"),
    ("fr", "for real"),
    ("frfr", "for real"),
    ("bf", "boyfriend"),
    ("gf", "girlfriend"),
    ("pls", "please"),
    ("plz", "please"),
    ("abt", "about"),
    ("bout", "about"),
    ("w", "with"),
    ("ok", "okay"),
    ("od", "overdose"),
    ("oded", "overdosed"),
    ("odd", "overdosed"),
    ("od'd", "overdosed"),
    ("odd'd", "overdosed"),
    ("sewerslide", "suicide"),
    ("suside", "suicide"),
    ("suicde", "suicide"),
    ("sucide", "suicide"),
    ("suiside", "suicide"),
    ("unalive", "unalive"),
    ("tylenols", "tylenol"),
    ("q", "que"),
    ("k", "que"),
    ("xq", "porque"),
    ("pq", "porque"),
    ("tb", "tambien"),
    ("tmb", "tambien"),
];

/// Words speech-to-text splits apart, joined again before anything else reads them.
const JOINS: &[(&[&str], &str)] = &[
    (&["my", "self"], "myself"),
    (&["him", "self"], "himself"),
    (&["her", "self"], "herself"),
    (&["them", "selves"], "themselves"),
    (&["them", "self"], "themself"),
    (&["your", "self"], "yourself"),
    (&["over", "dose"], "overdose"),
    (&["o", "d"], "overdose"),
    (&["over", "dosed"], "overdosed"),
    (&["over", "dosing"], "overdosing"),
    (&["sue", "aside"], "suicide"),
    (&["sue", "a", "side"], "suicide"),
    (&["sewer", "slide"], "suicide"),
    (&["sue", "side"], "suicide"),
    (&["soo", "aside"], "suicide"),
    (&["un", "alive"], "unalive"),
    (&["un", "aliving"], "unaliving"),
    (&["tie", "lenol"], "tylenol"),
    (&["tie", "lenols"], "tylenol"),
    (&["thai", "lenol"], "tylenol"),
    (&["self", "harm"], "selfharm"),
    (&["self", "harming"], "selfharm"),
    (&["self", "harmed"], "selfharm"),
    (&["self", "injury"], "selfharm"),
    (&["self", "delete"], "selfdelete"),
    (&["self", "deleting"], "selfdelete"),
    (&["self", "deleted"], "selfdelete"),
    (&["self", "deletion"], "selfdelete"),
    (&["kill", "your", "self"], "kys"),
];

/// Words that start a new clause when spoken without punctuation. A negation does not reach
/// past them: "i am not suicidal but i want to die" is two clauses.
const CLAUSE_WORDS: &[&str] = &[
    "but", "and", "because", "though", "although", "however", "except", "yet", "so", "then",
    "pero", "y", "porque", "aunque", "sino", "entonces", "pues", "e",
];

/// Folds a word: lowercase, accents removed, apostrophes kept for the rewrites.
pub(super) fn fold(text: &str) -> String {
    text.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .collect::<String>()
        .to_lowercase()
        .replace(['’', '‘', '`', '´'], "'")
}

/// The words of `text`, folded and rewritten, with clause breaks as `BREAK`.
fn folded_words(text: &str) -> Vec<String> {
    let folded = fold(text);
    let mut raw: Vec<String> = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, raw: &mut Vec<String>| {
        let word = current.trim_matches('\'').to_owned();
        if !word.is_empty() {
            raw.push(word);
        }
        current.clear();
    };
    for c in folded.chars() {
        if c.is_alphanumeric() || c == '\'' {
            current.push(c);
        } else {
            flush(&mut current, &mut raw);
            if ",:".contains(c) {
                raw.push(SOFT_BREAK.to_owned());
            } else if ".!?;¿¡()[]\"".contains(c) || c == '\n' {
                raw.push(BREAK.to_owned());
            }
        }
    }
    flush(&mut current, &mut raw);

    let mut rewritten = Vec::with_capacity(raw.len());
    for word in raw {
        match REWRITES.iter().find(|(from, _)| *from == word) {
            Some((_, to)) => rewritten.extend(to.split(' ').map(str::to_owned)),
            None if word.contains('\'') => {
                // "mom's", "o'clock": the apostrophe is dropped, as speech-to-text drops it.
                let stripped = word.split('\'').next().unwrap_or_default().to_owned();
                if !stripped.is_empty() {
                    rewritten.push(stripped);
                }
            }
            None => rewritten.push(word),
        }
    }

    let mut joined: Vec<String> = Vec::with_capacity(rewritten.len());
    let mut i = 0;
    while i < rewritten.len() {
        let found = JOINS.iter().find(|(parts, _)| {
            rewritten.len() >= i + parts.len()
                && parts.iter().zip(&rewritten[i..]).all(|(p, w)| p == w)
        });
        match found {
            Some((parts, into)) => {
                joined.push((*into).to_owned());
                i += parts.len();
            }
            None => {
                joined.push(rewritten[i].clone());
                i += 1;
            }
        }
    }

    // Runs of breaks become one, the hard kind if any of them is hard.
    let is_break = |w: &str| w == BREAK || w == SOFT_BREAK;
    let mut out: Vec<String> = Vec::with_capacity(joined.len());
    for word in joined {
        let clause_word = CLAUSE_WORDS.contains(&word.as_str());
        if clause_word || is_break(&word) {
            let kind = if word == SOFT_BREAK {
                SOFT_BREAK
            } else {
                BREAK
            };
            match out.last_mut() {
                None => {}
                Some(last) if last == SOFT_BREAK => *last = kind.to_owned(),
                Some(last) if last == BREAK => {}
                Some(_) => out.push(kind.to_owned()),
            }
            if !clause_word {
                continue;
            }
        }
        out.push(word);
    }
    while out.last().is_some_and(|w| is_break(w)) {
        out.pop();
    }
    out
}

/// The tokens of `text`, with clause breaks.
pub(super) fn tokens(text: &str) -> Vec<Token> {
    folded_words(text)
        .into_iter()
        .map(|word| Token {
            en: stem_en(&word),
            es: stem_es(&word),
            word,
        })
        .collect()
}

/// The words of `text`, folded and rewritten, without clause breaks: for reading short answers.
pub fn words(text: &str) -> Vec<String> {
    folded_words(text)
        .into_iter()
        .filter(|w| w != BREAK && w != SOFT_BREAK)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(text: &str) -> String {
        folded_words(text).join(" ")
    }

    #[test]
    fn case_apostrophes_and_accents_do_not_matter() {
        assert_eq!(joined("I’m DONE"), "i am done");
        assert_eq!(joined("im done"), "i am done");
        assert_eq!(joined("i dont want to"), "i do not want to");
        assert_eq!(joined("Sí. Estoy aquí"), "si | estoy aqui");
    }

    #[test]
    fn words_speech_to_text_splits_are_joined() {
        assert_eq!(joined("kill my self"), "kill myself");
        assert_eq!(joined("took an over dose"), "took an overdose");
        assert_eq!(joined("thinking about sue aside"), "thinking about suicide");
    }

    #[test]
    fn clauses_break_at_punctuation_and_at_the_words_that_join_them() {
        assert_eq!(
            joined("i am not suicidal but i want to die"),
            "i am not suicidal | but i want to die"
        );
        assert_eq!(
            joined("no. nobody would miss me"),
            "no | nobody would miss me"
        );
        assert_eq!(
            joined("i took them, all of them."),
            "i took them , all of them"
        );
    }

    #[test]
    fn tokens_carry_stems() {
        let t = tokens("killing");
        assert_eq!(t[0].en, "kill");
    }
}
