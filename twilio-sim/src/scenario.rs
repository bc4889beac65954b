//! What a simulated caller does: their lines and key presses, in order, and how the people Hotline
//! dials answer. Read from flags or from a YAML or JSON file.
//!
//! The steps, as written in a file:
//!
//! ```yaml
//! steps:
//!   - say: I had a rough day.        # words, at a <Gather>, a <Record> or to ConversationRelay
//!   - press: "2"                     # keys (a number works too: press: 2)
//!   - silence                        # nothing at the next prompt
//!   - wait: 20                       # silent for 20 s, listening (a REST update cuts it short)
//!   - interrupt: Sorry, one more thing.  # ConversationRelay: words spoken over the next reply
//!   - drop_socket                    # ConversationRelay: Twilio loses the socket mid-reply
//! ```
//!
//! On a ConversationRelay session the steps drive the socket: `say` is a `prompt`, `press` one
//! `dtmf` message a key (heard only with `dtmfDetection="true"`), `silence` (5 s) and `wait` pass
//! with no message. `interrupt` and `drop_socket` act on the reply that comes next, once its
//! first token arrives: after a `say`, the reply to it. At a `<Gather>` or a `<Record>`,
//! `interrupt` is a `say` and `drop_socket` is skipped, as there is no socket to lose.

use serde::{Deserialize, Serialize};

/// One thing the caller does at the next prompt: `{say: "…"}`, `{press: "1"}`, `silence`,
/// `{wait: 20}`, `{interrupt: "…"}` or `drop_socket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawStep", into = "RawStep")]
pub enum Step {
    /// Speaks a line: recorded at a `<Record>`, heard as speech at a `<Gather>` that takes it,
    /// sent as a `prompt` on a ConversationRelay session.
    Say(String),
    /// Presses keys.
    Press(String),
    /// Says nothing at the next prompt.
    Silence,
    /// Stays silent at the next prompt for this many seconds (at the simulator's pace),
    /// listening: a REST update of the live call interrupts the wait, as it would a real one.
    Wait(u32),
    /// On a ConversationRelay session, speaks these words over the next reply once its first
    /// token arrives (Twilio sends `interrupt`, then the words as a `prompt`); elsewhere a `say`.
    Interrupt(String),
    /// On a ConversationRelay session, Twilio loses the socket in the middle of the next reply
    /// (after its first token): no close frame, then the `<Connect action>` with error 64105.
    DropSocket,
}

/// A step as written in a scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum RawStep {
    Say { say: String },
    Press { press: Keys },
    Wait { wait: u32 },
    Interrupt { interrupt: String },
    Word(String),
}

/// Keys, written as a string or a number (`press: 2`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Keys {
    Text(String),
    Number(u64),
}

impl TryFrom<RawStep> for Step {
    type Error = String;
    fn try_from(raw: RawStep) -> Result<Self, String> {
        match raw {
            RawStep::Say { say } => Ok(Self::Say(say)),
            RawStep::Press {
                press: Keys::Text(keys),
            } => Ok(Self::Press(keys)),
            RawStep::Press {
                press: Keys::Number(n),
            } => Ok(Self::Press(n.to_string())),
            RawStep::Wait { wait } => Ok(Self::Wait(wait)),
            RawStep::Interrupt { interrupt } => Ok(Self::Interrupt(interrupt)),
            RawStep::Word(word) if word == "silence" => Ok(Self::Silence),
            RawStep::Word(word) if word == "drop_socket" => Ok(Self::DropSocket),
            RawStep::Word(word) => Err(format!(
                "'{word}' is not a step: use {{say: ...}}, {{press: ...}}, {{wait: N}}, \
                 {{interrupt: ...}}, silence or drop_socket"
            )),
        }
    }
}

impl From<Step> for RawStep {
    fn from(step: Step) -> Self {
        match step {
            Step::Say(say) => Self::Say { say },
            Step::Press(keys) => Self::Press {
                press: Keys::Text(keys),
            },
            Step::Silence => Self::Word("silence".into()),
            Step::Wait(wait) => Self::Wait { wait },
            Step::Interrupt(interrupt) => Self::Interrupt { interrupt },
            Step::DropSocket => Self::Word("drop_socket".into()),
        }
    }
}

/// What the caller does once their steps run out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Afterwards {
    /// Hangs up at the next prompt.
    #[default]
    HangUp,
    /// Stays on the line, silent, until Hotline ends the call or puts them through to someone.
    StaySilent,
}

/// How a dialled line answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DialAnswer {
    /// Someone answers (after a whisper, they press 1); the caller talks with them and the call
    /// ends.
    #[default]
    Completed,
    NoAnswer,
    Busy,
    /// The counselor answers and hears the whisper, but does not press 1.
    Declines,
    /// The caller hangs up while it rings.
    CallerHangsUp,
}

/// When Twilio's transcription of a turn reaches Hotline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transcription {
    /// Right after the recording, before the turn is answered.
    #[default]
    Prompt,
    /// Only after the turn was answered without it (as Twilio's transcription often arrives in
    /// production): it is sent when the caller next reaches a prompt.
    Late,
}

/// A simulated call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// What the scenario shows; printed before the call.
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_from")]
    pub from: String,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub afterwards: Afterwards,
    /// How each `<Dial>` is answered, in order; the last answer repeats.
    #[serde(default)]
    pub dial: Vec<DialAnswer>,
    /// When the words of each turn arrive, if Hotline asks Twilio to transcribe them.
    #[serde(default)]
    pub transcription: Transcription,
}

fn default_from() -> String {
    "+14155550123".to_owned()
}

impl Scenario {
    /// Reads a scenario from `text`: YAML (JSON is YAML too).
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_norway::from_str(text).map_err(|e| format!("not a scenario: {e}"))
    }

    /// How the `n`th `<Dial>` (from 0) is answered.
    pub fn dial_answer(&self, n: usize) -> DialAnswer {
        self.dial
            .get(n)
            .or(self.dial.last())
            .copied()
            .unwrap_or_default()
    }
}

/// The example scenarios, committed with the code (`twilio-sim/scenarios/`).
pub fn examples() -> Vec<Scenario> {
    [
        include_str!("../scenarios/low-risk.yaml"),
        include_str!("../scenarios/asks-for-counselor.yaml"),
        include_str!("../scenarios/high-risk.yaml"),
        include_str!("../scenarios/silent-caller.yaml"),
    ]
    .iter()
    .map(|text| Scenario::parse(text).unwrap_or_else(|e| panic!("a committed example: {e}")))
    .collect()
}

/// The example scenarios written for a ConversationRelay call (`twilio-sim/scenarios/`), kept
/// apart from [`examples`]: their `interrupt` steps mean something only on a socket (at a
/// `<Gather>` they are plain words).
pub fn relay_examples() -> Vec<Scenario> {
    [include_str!("../scenarios/interrupts.yaml")]
        .iter()
        .map(|text| Scenario::parse(text).unwrap_or_else(|e| panic!("a committed example: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_parse_and_json_is_read_too() {
        let names: Vec<String> = examples().into_iter().map(|s| s.name).collect();
        assert_eq!(names.len(), 4);
        let json = r#"{"name": "j", "steps": [{"say": "hello"}, {"press": 2}, "silence"]}"#;
        let scenario = Scenario::parse(json).expect("parses");
        assert_eq!(
            scenario.steps,
            [
                Step::Say("hello".into()),
                Step::Press("2".into()),
                Step::Silence
            ]
        );
        assert_eq!(scenario.dial_answer(3), DialAnswer::Completed);
        assert!(Scenario::parse("name: x\nsteps: [{shout: hi}]").is_err());
        assert!(Scenario::parse("name: x\nsteps: [shout]").is_err());
    }

    #[test]
    fn relay_steps_are_read_and_written_back() {
        let scenario = Scenario::parse(
            "name: r\nsteps: [{say: hi}, {interrupt: \"wait, there is more\"}, drop_socket, {wait: 3}]",
        )
        .expect("parses");
        assert_eq!(
            scenario.steps,
            [
                Step::Say("hi".into()),
                Step::Interrupt("wait, there is more".into()),
                Step::DropSocket,
                Step::Wait(3),
            ]
        );
        let written = serde_norway::to_string(&scenario).expect("serialises");
        assert_eq!(Scenario::parse(&written), Ok(scenario));
        let error = Scenario::parse("name: x\nsteps: [hangup]").expect_err("not a step");
        assert!(
            error.contains("interrupt") && error.contains("drop_socket"),
            "{error}"
        );
        let relay = relay_examples();
        assert_eq!(relay.len(), 1);
        assert!(relay[0]
            .steps
            .iter()
            .any(|s| matches!(s, Step::Interrupt(_))));
    }
}
