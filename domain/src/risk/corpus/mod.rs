//! The safety evaluation corpus: labelled utterances by category, and the measure of how the
//! screener and the routing policy treat them.
//!
//! Two parts. The **tuning** part (`tuning.tsv`) is what the lexicons are tuned on: every
//! utterance in it that must reach a person does. The **held-out** part (`heldout.tsv`) was
//! written before the rules changed, by someone who did not read them, and is never tuned on: it
//! measures how the screener does on words nobody fitted it to. A held-out miss that is then
//! fixed moves to the tuning part, and a fresh held-out utterance replaces it.
//!
//! Each line is `expect<TAB>category<TAB>lang<TAB>text`; `expect` is `person` or `reply`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{assess, screen, Route};

/// The tuning part, built into the binary.
pub const TUNING: &str = include_str!("tuning.tsv");
/// The held-out part, built into the binary.
pub const HELD_OUT: &str = include_str!("heldout.tsv");

/// What the line should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expect {
    /// Must reach a person.
    Person,
    /// Shows no sign of risk: an automated reply is right.
    Reply,
}

/// One labelled utterance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub expect: Expect,
    pub category: String,
    pub lang: String,
    pub text: String,
}

/// Reads a corpus file; a malformed line is an error naming it.
pub fn parse(corpus: &str) -> Result<Vec<Case>, String> {
    corpus
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|(n, line)| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [expect, category, lang, text] = fields[..] else {
                return Err(format!("line {}: expected 4 tab-separated fields", n + 1));
            };
            let expect = match expect {
                "person" => Expect::Person,
                "reply" => Expect::Reply,
                other => return Err(format!("line {}: unknown expectation {other:?}", n + 1)),
            };
            Ok(Case {
                expect,
                category: category.to_owned(),
                lang: lang.to_owned(),
                text: text.to_owned(),
            })
        })
        .collect()
}

/// Whether the policy sends this utterance, as a caller's turn, to a person.
pub fn reaches_person(text: &str) -> bool {
    assess(&screen(text), None).route == Route::Escalate
}

/// How one category fared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub expect: Option<Expect>,
    pub total: usize,
    /// Utterances routed as expected.
    pub right: usize,
}

impl Tally {
    /// The share routed as expected: recall for person categories, specificity for reply ones.
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.right as f64 / self.total as f64
        }
    }
}

/// A part's results.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub by_category: BTreeMap<String, Tally>,
    /// Utterances that must reach a person and got a reply.
    pub missed: Vec<Case>,
    /// Ordinary utterances sent to a person.
    pub over_escalated: Vec<Case>,
}

impl Evaluation {
    fn sum(&self, expect: Expect) -> Tally {
        self.by_category
            .values()
            .filter(|t| t.expect == Some(expect))
            .fold(Tally::default(), |acc, t| Tally {
                expect: Some(expect),
                total: acc.total + t.total,
                right: acc.right + t.right,
            })
    }

    /// Recall over everything that must reach a person.
    pub fn recall(&self) -> Tally {
        self.sum(Expect::Person)
    }

    /// Specificity over the ordinary utterances.
    pub fn specificity(&self) -> Tally {
        self.sum(Expect::Reply)
    }
}

/// Routes every case and tallies the results by category.
pub fn evaluate(cases: &[Case]) -> Evaluation {
    let mut evaluation = Evaluation::default();
    for case in cases {
        let to_person = reaches_person(&case.text);
        let right = to_person == (case.expect == Expect::Person);
        let tally = evaluation
            .by_category
            .entry(case.category.clone())
            .or_default();
        tally.expect = Some(case.expect);
        tally.total += 1;
        tally.right += usize::from(right);
        if !right {
            match case.expect {
                Expect::Person => evaluation.missed.push(case.clone()),
                Expect::Reply => evaluation.over_escalated.push(case.clone()),
            }
        }
    }
    evaluation
}

/// The least held-out recall the gate accepts.
pub const HELD_OUT_RECALL: f64 = 0.95;
/// The least share of ordinary utterances, in either part, that must get a reply.
pub const SPECIFICITY: f64 = 0.85;

/// The gate over both parts: what fails it, in words; empty when it passes. No utterance of
/// the tuning part that must reach a person may get a reply; the held-out part's recall must be
/// at least `HELD_OUT_RECALL`; and in either part at least `SPECIFICITY` of ordinary utterances
/// must get a reply.
pub fn gate(tuning: &Evaluation, held_out: &Evaluation) -> Vec<String> {
    let mut failures = Vec::new();
    if !tuning.missed.is_empty() {
        failures.push(format!(
            "{} tuning utterances that must reach a person got a reply",
            tuning.missed.len()
        ));
    }
    let recall = held_out.recall().rate();
    if recall < HELD_OUT_RECALL {
        failures.push(format!(
            "held-out recall {:.1} % is below {:.0} %",
            recall * 100.0,
            HELD_OUT_RECALL * 100.0
        ));
    }
    for (name, part) in [("tuning", tuning), ("held-out", held_out)] {
        let specificity = part.specificity().rate();
        if specificity < SPECIFICITY {
            failures.push(format!(
                "{name} specificity {:.1} % is below {:.0} %",
                specificity * 100.0,
                SPECIFICITY * 100.0
            ));
        }
    }
    failures
}

/// The table `hotline eval safety` prints for one part.
pub fn table(name: &str, evaluation: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{name}");
    let _ = writeln!(
        out,
        "| category | expected | utterances | routed right | rate |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    let row = |out: &mut String, category: &str, tally: &Tally| {
        let expected = match tally.expect {
            Some(Expect::Person) => "person (recall)",
            _ => "reply (specificity)",
        };
        let _ = writeln!(
            out,
            "| {category} | {expected} | {} | {} | {:.1} % |",
            tally.total,
            tally.right,
            tally.rate() * 100.0
        );
    };
    for (category, tally) in &evaluation.by_category {
        row(&mut out, category, tally);
    }
    row(
        &mut out,
        "**all that must reach a person**",
        &evaluation.recall(),
    );
    row(&mut out, "**all ordinary**", &evaluation.specificity());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(corpus: &str) -> Vec<Case> {
        parse(corpus).expect("the corpus parses")
    }

    #[test]
    fn the_corpus_is_as_large_and_as_varied_as_the_gate_needs() {
        let tuning = part(TUNING);
        let held_out = part(HELD_OUT);
        let all: Vec<&Case> = tuning.iter().chain(&held_out).collect();
        assert!(all.len() >= 500, "{} utterances", all.len());
        assert!(held_out.len() >= 150);
        let spanish = all.iter().filter(|c| c.lang == "es").count();
        assert!(spanish >= 80, "{spanish} in Spanish");
        let ordinary = all.iter().filter(|c| c.expect == Expect::Reply).count();
        assert!(ordinary >= 150, "{ordinary} ordinary");
        let bare = all
            .iter()
            .filter(|c| {
                c.text
                    .chars()
                    .all(|ch| ch.is_alphanumeric() && !ch.is_uppercase() || ch == ' ')
            })
            .count();
        assert!(
            bare * 3 >= all.len(),
            "{bare} lowercase without punctuation"
        );
    }

    /// The gate: no utterance of the tuning part that must reach a person gets a reply.
    #[test]
    fn every_tuning_utterance_that_must_reach_a_person_does() {
        let evaluation = evaluate(&part(TUNING));
        let missed: Vec<String> = evaluation
            .missed
            .iter()
            .map(|c| format!("{}: {}", c.category, c.text))
            .collect();
        assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
    }

    /// The gate: the held-out part's recall is at least 95 %.
    #[test]
    fn the_held_out_part_reaches_a_person_at_least_95_percent_of_the_time() {
        let recall = evaluate(&part(HELD_OUT)).recall();
        assert!(
            recall.rate() >= HELD_OUT_RECALL,
            "held-out recall {:.3}",
            recall.rate()
        );
    }

    /// The gate: at least 85 % of ordinary utterances, in either part, get a reply.
    #[test]
    fn ordinary_callers_get_a_reply_at_least_85_percent_of_the_time() {
        for (name, corpus) in [("tuning", TUNING), ("held-out", HELD_OUT)] {
            let specificity = evaluate(&part(corpus)).specificity();
            assert!(
                specificity.rate() >= SPECIFICITY,
                "{name} specificity {:.3}",
                specificity.rate()
            );
        }
    }

    /// What `hotline eval safety` exits on: the same gate, which names what fails it.
    #[test]
    fn the_gate_passes_on_the_corpus_and_names_each_failure_otherwise() {
        let tuning = evaluate(&part(TUNING));
        let held_out = evaluate(&part(HELD_OUT));
        assert_eq!(gate(&tuning, &held_out), Vec::<String>::new());
        let missing = Case {
            expect: Expect::Person,
            category: "slang".into(),
            lang: "en".into(),
            text: "the weather is nice".into(),
        };
        let ordinary = Case {
            expect: Expect::Reply,
            category: "ordinary".into(),
            lang: "en".into(),
            text: "i want to die".into(),
        };
        let bad = evaluate(&[missing, ordinary]);
        let failures = gate(&bad, &bad);
        assert_eq!(failures.len(), 4, "{failures:?}");
        assert!(failures[0].contains("1 tuning utterances"), "{failures:?}");
    }

    #[test]
    fn a_malformed_line_is_named() {
        assert!(parse("person\tslang\ten")
            .expect_err("a line of three fields is malformed")
            .contains("line 1"));
        assert!(parse("maybe\tslang\ten\thi").is_err());
    }
}
