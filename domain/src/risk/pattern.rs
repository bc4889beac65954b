//! The small pattern language the lexicons are written in, and its matcher.
//!
//! A pattern is a sequence of terms separated by spaces:
//! - `kill` matches any word with the same stem (killing, killed, kills);
//! - `=me` matches exactly that word;
//! - `kill|end|take` matches any of the alternatives, and an alternative may be several words
//!   joined by `_`: `give_up|quit|end_it`;
//! - `@drug` matches any word of a word class (see `lexicon::CLASSES`);
//! - `?my` matches the term or nothing;
//! - `~` skips up to three words, `~~` up to six; never past the end of a clause (a comma is
//!   not one: it often only sets off an aside).
//!
//! Between two terms the matcher also reads past hedges ("just", "really", "literally"), so that
//! "not want" meets "i dont really want". Pattern words are folded like the transcript's, so
//! "tomé" in a pattern meets "tome".
//!
//! Stems come from the Snowball stemmer of the entry's language, so an English pattern does not
//! match a Spanish word that happens to stem alike.

use super::normalise::{fold, stem_en, stem_es, Token};

/// The language a lexicon entry is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lang {
    En,
    Es,
}

#[derive(Debug, Clone)]
enum Atom {
    Exact(String),
    Stem(String),
    /// A word class, resolved when the pattern is compiled: each word with its stem.
    Class(Vec<(&'static str, String)>),
}

/// One alternative: a word, or several in a row.
type Alternative = Vec<Atom>;

#[derive(Debug, Clone)]
enum Term {
    Any(Vec<Alternative>),
    Optional(Vec<Alternative>),
    Gap(usize),
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    lang: Lang,
    terms: Vec<Term>,
    pub source: &'static str,
}

/// Finds a word class by name; implemented by the lexicon.
pub(super) type Classes = fn(&str) -> Option<&'static [&'static str]>;

impl Pattern {
    pub(super) fn compile(source: &'static str, lang: Lang, classes: Classes) -> Self {
        let stem = |w: &str| match lang {
            Lang::En => stem_en(w),
            Lang::Es => stem_es(w),
        };
        let atom = |a: &str| -> Atom {
            let a = &fold(a);
            if let Some(exact) = a.strip_prefix('=') {
                Atom::Exact(exact.to_owned())
            } else if let Some(class) = a.strip_prefix('@') {
                let words = classes(class).unwrap_or_default();
                Atom::Class(words.iter().map(|w| (*w, stem(w))).collect())
            } else {
                Atom::Stem(stem(a))
            }
        };
        let atoms = |alternatives: &str| -> Vec<Alternative> {
            alternatives
                .split('|')
                .filter(|a| !a.is_empty())
                .map(|a| a.split('_').filter(|w| !w.is_empty()).map(atom).collect())
                .collect()
        };
        let terms = source
            .split_whitespace()
            .map(|term| match term {
                "~" => Term::Gap(3),
                "~~" => Term::Gap(6),
                _ => match term.strip_prefix('?') {
                    Some(optional) => Term::Optional(atoms(optional)),
                    None => Term::Any(atoms(term)),
                },
            })
            .collect();
        Self {
            lang,
            terms,
            source,
        }
    }

    pub(super) fn lang(&self) -> Lang {
        self.lang
    }

    /// Every span `[start, end)` of `tokens` the pattern matches, leftmost-shortest per start.
    pub(super) fn find(&self, tokens: &[Token]) -> Vec<(usize, usize)> {
        (0..tokens.len())
            .filter_map(|start| self.match_from(0, start, tokens).map(|end| (start, end)))
            .collect()
    }

    fn stem_of<'t>(&self, token: &'t Token) -> &'t str {
        match self.lang {
            Lang::En => &token.en,
            Lang::Es => &token.es,
        }
    }

    fn atom_matches(&self, atom: &Atom, token: &Token) -> bool {
        if token.is_break() {
            return false;
        }
        match atom {
            Atom::Exact(word) => token.word == *word,
            Atom::Stem(stem) => token.word == *stem || self.stem_of(token) == stem,
            Atom::Class(words) => words.iter().any(|(word, stem)| {
                token.word == *word
                    || self.stem_of(token) == stem
                    || (*word == "2" && token.word.chars().all(|c| c.is_ascii_digit()))
            }),
        }
    }

    /// The lengths of the alternatives that match at `at`.
    fn matching<'a>(
        &'a self,
        alternatives: &'a [Alternative],
        tokens: &'a [Token],
        at: usize,
    ) -> impl Iterator<Item = usize> + 'a {
        alternatives.iter().filter_map(move |alternative| {
            let words = tokens.get(at..at + alternative.len())?;
            alternative
                .iter()
                .zip(words)
                .all(|(atom, token)| self.atom_matches(atom, token))
                .then_some(alternative.len())
        })
    }

    /// Where term `term` may start from `at`: there, or past up to two hedges after a term.
    fn starts(&self, term: usize, at: usize, tokens: &[Token]) -> impl Iterator<Item = usize> {
        let mut hedges = 0;
        if term > 0 {
            while hedges < 2 && tokens.get(at + hedges).is_some_and(Token::is_hedge) {
                hedges += 1;
            }
        }
        at..=at + hedges
    }

    /// Matches terms `term..` from token `at`; returns where the match ends.
    fn match_from(&self, term: usize, at: usize, tokens: &[Token]) -> Option<usize> {
        let Some(current) = self.terms.get(term) else {
            return Some(at);
        };
        match current {
            Term::Any(alternatives) => self.starts(term, at, tokens).find_map(|at| {
                self.matching(alternatives, tokens, at)
                    .find_map(|len| self.match_from(term + 1, at + len, tokens))
            }),
            Term::Optional(alternatives) => self
                .starts(term, at, tokens)
                .find_map(|at| {
                    self.matching(alternatives, tokens, at)
                        .find_map(|len| self.match_from(term + 1, at + len, tokens))
                })
                .or_else(|| self.match_from(term + 1, at, tokens)),
            Term::Gap(most) => {
                for skip in 0..=*most {
                    if skip > 0 && tokens.get(at + skip - 1).is_none_or(Token::is_hard_break) {
                        break;
                    }
                    if let Some(end) = self.match_from(term + 1, at + skip, tokens) {
                        return Some(end);
                    }
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::normalise::tokens;
    use super::*;

    fn classes(name: &str) -> Option<&'static [&'static str]> {
        (name == "drug").then_some(&["pill", "tylenol", "2"][..])
    }

    fn finds(pattern: &'static str, text: &str) -> bool {
        !Pattern::compile(pattern, Lang::En, classes)
            .find(&tokens(text))
            .is_empty()
    }

    #[test]
    fn stems_alternatives_classes_gaps_and_optional_terms() {
        assert!(finds("kill myself", "I keep thinking of killing myself"));
        assert!(finds("took ~ @drug", "i took like thirty pills"));
        assert!(finds("took @drug", "i took 30"));
        assert!(finds("want to ?be die|dead", "i want to be dead"));
        assert!(!finds("took ~ @drug", "i took the bus, and pills"));
        assert!(!finds("=me", "myself"));
        assert!(finds(
            "no ~ reason to ~ go_on|keep_going",
            "there is no reason to keep going"
        ));
        assert!(!finds(
            "no ~ reason to ~ go_on|keep_going",
            "there is no reason to keep"
        ));
    }

    #[test]
    fn hedges_commas_irregular_verbs_and_accents() {
        assert!(finds("not want to live", "i dont really want to live"));
        assert!(finds("took ~ all", "i took his pills, all of them"));
        assert!(!finds("took ~ all", "i took his pills. all of them"));
        assert!(finds("take ~ @drug", "i took 30 pills"));
        assert!(finds("never wake", "i wish i had never woken up"));
    }
}
