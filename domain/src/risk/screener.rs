//! A deterministic, versioned screener over what the caller said. It follows the C-SSRS screener's
//! items (wish to be dead, active thoughts, method, intent, plan, recent behaviour) and knows
//! three things a word list alone gets wrong: negation ("I would never kill myself"), other people
//! ("my friend wants to die"), and phrases that are risk in negative form ("I don't want to live").
//!
//! It is a floor, not a clinician: it errs towards the higher level, and any change to its tables
//! or rules must change `SCREENER_VERSION`, which is stored with every assessment.

use super::{RiskLevel, Screening, Signal};

/// Stored with every assessment so that any level can be traced to the rules that set it.
pub const SCREENER_VERSION: &str = "cssrs-screener-2";

const WISH_TO_BE_DEAD: &[&str] = &[
    "wish i was dead",
    "wish i were dead",
    "wish i was not alive",
    "wish i were not alive",
    "want to die",
    "wanna die",
    "better off dead",
    "better off without me",
    "do not want to live",
    "no longer want to live",
    "do not want to be alive",
    "do not want to be here anymore",
    "do not want to wake up",
    "go to sleep and never wake up",
    "go to sleep and not wake up",
    "no reason to live",
    "tired of living",
    "tired of being alive",
    "want it all to end",
    "want it to end",
    "do not want to exist",
    "wish i could disappear",
    "wish i had never been born",
];

const ACTIVE_THOUGHTS: &[&str] = &[
    "kill myself",
    "killing myself",
    "killed myself",
    "end my life",
    "ending my life",
    "take my own life",
    "taking my own life",
    "take my life",
    "suicide",
    "suicidal",
    "end it all",
    "ending it all",
    "hurt myself",
    "harm myself",
    "not be here much longer",
];

/// Ways of dying named in the first person: a method on their own.
pub(super) const METHODS: &[&str] = &[
    "hang myself",
    "hanging myself",
    "shoot myself",
    "shooting myself",
    "overdose",
    "slit my wrists",
    "cut my wrists",
    "jump off",
    "jump in front of",
    "step in front of",
    "drown myself",
    "poison myself",
    "crash my car",
    "how to kill myself",
    "ways to die",
];

/// Means that only count as a method when the caller also speaks of dying.
pub(super) const MEANS: &[&str] = &[
    "pills",
    "tablets",
    "gun",
    "rifle",
    "pistol",
    "rope",
    "bridge",
    "knife",
    "razor",
    "train",
    "poison",
    "car exhaust",
    "carbon monoxide",
    "rooftop",
    "roof",
    "cliff",
    "ledge",
];

/// Keeping means back, or meaning to use all of them: with a means named, a plan (C-SSRS 5) even
/// when dying is not named ("I have pills saved up and I'm going to take them tonight").
const HOARDING_OR_USING_ALL: &[&str] = &[
    "saved up",
    "saving up",
    "been saving",
    "stockpile",
    "stockpiled",
    "stockpiling",
    "hoarding",
    "take them all",
    "take all of them",
    "take all my",
    "take all the",
    "take the whole",
    "take every",
    "swallow them all",
    "swallow all",
];

const INTENT: &[&str] = &[
    "going to kill myself",
    "gonna kill myself",
    "will kill myself",
    "going to end my life",
    "will end my life",
    "going to end it",
    "will end it",
    "going to take my life",
    "going to do it",
    "am going to do it",
    "will do it",
    "made up my mind",
    "decided to end",
    "decided to die",
    "intend to die",
    "intend to kill",
    "plan to kill myself",
    "plan to end",
];

const PLAN: &[&str] = &[
    "have a plan",
    "got a plan",
    "my plan is",
    "worked out how",
    "figured out how",
    "wrote a note",
    "written a note",
    "writing a note",
    "suicide note",
    "have the pills",
    "bought a gun",
    "got a gun",
    "have a gun",
    "saved up pills",
    "saving up pills",
    "collected pills",
    "stockpiled",
    "stockpiling",
    "picked a date",
    "set a date",
    "giving away my",
    "gave away my",
    "said my goodbyes",
    "saying goodbye to everyone",
];

const RECENT_BEHAVIOUR: &[&str] = &[
    "tried to kill myself",
    "tried to end my life",
    "tried to take my life",
    "attempted suicide",
    "suicide attempt",
    "tried to overdose",
    "took an overdose",
    "cut myself",
    "been cutting",
    "tried to hang myself",
    "last time i tried",
];

/// Something happening now: these alone make the level imminent.
const IN_PROGRESS: &[&str] = &[
    "have taken",
    "just took",
    "already took",
    "took all",
    "swallowed",
    "am on the bridge",
    "standing on the",
    "on the ledge",
    "holding the gun",
    "gun in my hand",
    "knife in my hand",
    "the rope is ready",
    "am bleeding",
    "drank poison",
    "doing it now",
    "doing it right now",
    "this is goodbye",
    "goodbye forever",
    "by the time you",
    "it is too late",
];

/// When combined with intent or a plan, these make the level imminent.
const SOON: &[&str] = &[
    "tonight",
    "today",
    "right now",
    "this evening",
    "this morning",
    "in an hour",
    "soon",
    "after this call",
    "when i hang up",
];

const HOPELESSNESS: &[&str] = &[
    "hopeless",
    "no way out",
    "cannot go on",
    "cannot take it anymore",
    "cannot do this anymore",
    "nothing matters",
    "no point",
    "worthless",
    "a burden",
    "trapped",
    "giving up",
    "give up",
];

const CONCERN_FOR_OTHER: &[&str] = &[
    "wants to die",
    "kill himself",
    "kill herself",
    "kill themselves",
    "killing himself",
    "killing herself",
    "killing themselves",
    "end his life",
    "end her life",
    "end their life",
    "take his own life",
    "take her own life",
    "take their own life",
    "hurt himself",
    "hurt herself",
    "hurt themselves",
];

const PROTECTIVE: &[&str] = &[
    "my kids",
    "my children",
    "my family",
    "my dog",
    "my cat",
    "reasons to live",
    "would never do",
    "my therapist",
    "my faith",
    "getting help",
    "want to get better",
    "want to live",
];

/// Words that negate what follows within a few words ("I am not suicidal").
const NEGATIONS: &[&str] = &["not", "never", "nor"];
const NEGATION_WINDOW: usize = 4;
/// Negated intentions, which reach further ("I'm not going to do anything to hurt myself"), unlike
/// a bare "not" ("I'm not sure anyone would care if I killed myself" is not a negation).
const NEGATED_INTENTIONS: &[&str] = &[
    "not going to",
    "never going to",
    "will not",
    "would not",
    "would never",
    "do not want to",
    "not want to",
    "not planning to",
    "no intention",
];
const NEGATED_INTENTION_WINDOW: usize = 8;

const FIRST_PERSON: &[&str] = &["i", "me", "myself", "im"];
const THIRD_PERSON: &[&str] = &[
    "he",
    "she",
    "they",
    "him",
    "her",
    "them",
    "friend",
    "son",
    "daughter",
    "brother",
    "sister",
    "mom",
    "mum",
    "mother",
    "dad",
    "father",
    "partner",
    "wife",
    "husband",
    "boyfriend",
    "girlfriend",
    "someone",
    "somebody",
    "cousin",
    "kid",
    "child",
    "colleague",
    "roommate",
];

/// Screens one utterance.
pub fn screen(text: &str) -> Screening {
    let mut signals = Vec::new();
    let mut any_ideation = false;
    let mut soon = false;
    let mut means = false;
    let mut hoarding_or_using_all = false;
    for clause in clauses(&normalise(text)) {
        let words: Vec<&str> = clause.split_whitespace().collect();
        let found = |table: &[&str]| find(&words, table);
        // Phrases are checked most specific first; a clause about someone else is their risk,
        // not the caller's.
        let about_other = !found(CONCERN_FOR_OTHER).is_empty();
        let first_person = |hits: Vec<Hit>| hits.iter().any(|h| !h.negated && !h.third_person);
        let table_signals = [
            (IN_PROGRESS, Signal::Imminence),
            (RECENT_BEHAVIOUR, Signal::RecentBehaviour),
            (PLAN, Signal::Plan),
            (INTENT, Signal::Intent),
            (METHODS, Signal::Method),
            (ACTIVE_THOUGHTS, Signal::ActiveThoughts),
            (WISH_TO_BE_DEAD, Signal::WishToBeDead),
            (HOPELESSNESS, Signal::Hopelessness),
        ];
        for (table, signal) in table_signals {
            let hits = found(table);
            let third = hits.iter().any(|h| !h.negated && h.third_person);
            if first_person(hits) {
                signals.push(signal);
            } else if third {
                signals.push(Signal::ConcernForOther);
            }
        }
        if about_other {
            signals.push(Signal::ConcernForOther);
        }
        if first_person(found(PROTECTIVE)) {
            signals.push(Signal::ProtectiveFactor);
        }
        any_ideation |= signals.iter().any(|s| {
            matches!(
                s,
                Signal::WishToBeDead | Signal::ActiveThoughts | Signal::Intent | Signal::Plan
            )
        });
        soon |= !found(SOON).is_empty();
        means |= first_person(found(MEANS));
        hoarding_or_using_all |= first_person(found(HOARDING_OR_USING_ALL));
    }
    if means && hoarding_or_using_all {
        signals.push(Signal::Method);
        signals.push(Signal::Plan);
    }
    if any_ideation && means {
        signals.push(Signal::Method);
    }
    let has = |s: Signal| signals.contains(&s);
    if (has(Signal::Intent) || has(Signal::Plan)) && soon {
        signals.push(Signal::Imminence);
    }
    signals.sort();
    signals.dedup();
    let has = |s: Signal| signals.contains(&s);
    let level = if has(Signal::Imminence) {
        RiskLevel::Imminent
    } else if has(Signal::Intent) || has(Signal::Plan) || has(Signal::RecentBehaviour) {
        RiskLevel::High
    } else if has(Signal::ActiveThoughts) || has(Signal::Method) {
        RiskLevel::Moderate
    } else if has(Signal::WishToBeDead) || has(Signal::Hopelessness) || has(Signal::ConcernForOther)
    {
        RiskLevel::Low
    } else {
        RiskLevel::None
    };
    Screening {
        level,
        signals,
        version: SCREENER_VERSION.to_owned(),
    }
}

/// Lower case, contractions expanded, punctuation other than clause breaks removed.
pub(super) fn normalise(text: &str) -> String {
    let lowered = text.to_lowercase().replace(['’', '‘', '`'], "'");
    let expanded = [
        ("i'm", "i am"),
        ("im ", "i am "),
        ("i've", "i have"),
        ("i'll", "i will"),
        ("i'd", "i would"),
        ("can't", "cannot"),
        ("won't", "will not"),
        ("n't", " not"),
        ("gonna", "going to"),
        ("wanna", "want to"),
        ("it's", "it is"),
        ("that's", "that is"),
    ]
    .iter()
    .fold(format!("{lowered} "), |acc, (from, to)| {
        acc.replace(from, to)
    });
    expanded
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || ".!?;,".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect()
}

/// Clauses: sentences, and the parts of a sentence joined by "but".
fn clauses(text: &str) -> Vec<String> {
    text.split(['.', '!', '?', ';', ','])
        .flat_map(|sentence| {
            sentence
                .split(" but ")
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.trim().is_empty())
        .collect()
}

#[derive(Debug)]
struct Hit {
    negated: bool,
    third_person: bool,
}

/// The first phrase of `table` that occurs in `words`, whole words only.
pub(super) fn find_phrase<'t>(words: &[&str], table: &[&'t str]) -> Option<&'t str> {
    table.iter().copied().find(|phrase| {
        let phrase: Vec<&str> = phrase.split_whitespace().collect();
        !phrase.is_empty() && words.windows(phrase.len()).any(|w| w == phrase.as_slice())
    })
}

/// Every occurrence of a phrase of `table` in `words`, whole words only.
fn find(words: &[&str], table: &[&str]) -> Vec<Hit> {
    let mut hits = Vec::new();
    for phrase in table {
        let phrase: Vec<&str> = phrase.split_whitespace().collect();
        if phrase.is_empty() || phrase.len() > words.len() {
            continue;
        }
        for start in 0..=words.len() - phrase.len() {
            if words[start..start + phrase.len()] != phrase[..] {
                continue;
            }
            let before = &words[start.saturating_sub(NEGATION_WINDOW)..start];
            let further = &words[start.saturating_sub(NEGATED_INTENTION_WINDOW)..start];
            let negated = before.iter().any(|w| NEGATIONS.contains(w))
                || find_phrase(further, NEGATED_INTENTIONS).is_some();
            // The nearest person named before the phrase is its subject.
            let subject = words[..start]
                .iter()
                .rev()
                .find(|w| FIRST_PERSON.contains(w) || THIRD_PERSON.contains(w));
            let third_person = subject.is_some_and(|w| THIRD_PERSON.contains(w))
                && !phrase.contains(&"myself")
                && !phrase.contains(&"my");
            hits.push(Hit {
                negated,
                third_person,
            });
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(text: &str) -> RiskLevel {
        screen(text).level
    }

    #[test]
    fn utterances_per_level() {
        let table: &[(RiskLevel, &[&str])] = &[
            (
                RiskLevel::None,
                &[
                    "I had a rough day at work and I just need to talk.",
                    "I'm calling because I can't sleep.",
                    "I took the train home and missed my stop.",
                    "I saved up for a new car and I'm going to take it out tonight.",
                    "The doctor gave me new pills and I take them every morning.",
                    "",
                ],
            ),
            (
                RiskLevel::Low,
                &[
                    "Sometimes I wish I was dead.",
                    "I don't want to live like this anymore.",
                    "Everything feels hopeless.",
                    "I feel like such a burden to everyone.",
                    "I'm worried my friend wants to die.",
                    "My brother said he might kill himself.",
                    "I wish I could go to sleep and never wake up.",
                ],
            ),
            (
                RiskLevel::Moderate,
                &[
                    "I've been thinking about killing myself.",
                    "I feel suicidal.",
                    "I keep thinking about ending my life, and about the pills in the cabinet.",
                    "I've thought about how I'd hang myself.",
                ],
            ),
            (
                RiskLevel::High,
                &[
                    "I'm going to kill myself.",
                    "I have a plan to end it.",
                    "I wrote a note last week.",
                    "I tried to kill myself last year.",
                    "I've made up my mind, I want to die.",
                    "I bought a gun because I want to end my life.",
                    "I have pills saved up in the drawer.",
                    "I'm going to take all the pills in the cabinet.",
                ],
            ),
            (
                RiskLevel::Imminent,
                &[
                    "I'm going to kill myself tonight.",
                    "I've taken all the pills.",
                    "I'm standing on the bridge right now.",
                    "I have a plan and I'm doing it right now.",
                    "This is goodbye.",
                    "I have pills saved up and I'm going to take them tonight.",
                ],
            ),
        ];
        for (expected, utterances) in table {
            for text in *utterances {
                let got = screen(text);
                assert_eq!(got.level, *expected, "{text:?} → {got:?}");
            }
        }
    }

    #[test]
    fn negations_do_not_raise_the_level() {
        for text in [
            "I'm not suicidal, I'm just exhausted.",
            "I would never kill myself.",
            "I don't want to kill myself, I want to feel better.",
            "I'm not going to do anything to hurt myself.",
        ] {
            assert!(
                level(text) <= RiskLevel::Low,
                "{text:?} → {:?}",
                screen(text)
            );
        }
    }

    #[test]
    fn a_negation_elsewhere_does_not_hide_risk() {
        assert_eq!(
            level("I'm not sure anyone would care if I killed myself."),
            RiskLevel::Moderate
        );
        assert_eq!(
            level("I'm not going to lie, I want to kill myself."),
            RiskLevel::Moderate
        );
        assert_eq!(
            level("I'm not okay. I want to kill myself."),
            RiskLevel::Moderate
        );
        assert_eq!(
            level("My friend is fine but I want to kill myself."),
            RiskLevel::Moderate
        );
    }

    #[test]
    fn someone_else_s_risk_is_concern_not_the_caller_s_risk() {
        let screened =
            screen("My friend says she wants to kill herself and I don't know what to do.");
        assert_eq!(screened.level, RiskLevel::Low);
        assert!(screened.signals.contains(&Signal::ConcernForOther));
        assert!(!screened.signals.contains(&Signal::ActiveThoughts));
        // …unless the caller speaks of their own risk too.
        assert_eq!(
            level("My dad killed himself and now I want to kill myself too."),
            RiskLevel::Moderate
        );
    }

    #[test]
    fn means_count_only_alongside_talk_of_dying() {
        assert_eq!(
            level("I bought a new knife for the kitchen."),
            RiskLevel::None
        );
        let screened = screen("I want to die. There is a rope in the garage.");
        assert!(screened.signals.contains(&Signal::Method), "{screened:?}");
    }

    #[test]
    fn protective_factors_are_recorded_but_never_lower_the_level() {
        let screened = screen("I'm going to kill myself, but I keep thinking of my kids.");
        assert_eq!(screened.level, RiskLevel::High);
        assert!(screened.signals.contains(&Signal::ProtectiveFactor));
    }

    #[test]
    fn the_result_names_its_version_and_is_deterministic() {
        let text = "I want to die tonight, I have the pills.";
        assert_eq!(screen(text), screen(text));
        assert_eq!(screen(text).version, SCREENER_VERSION);
        assert_eq!(screen(text).level, RiskLevel::Imminent);
    }
}
