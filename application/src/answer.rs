//! What the caller hears next, independent of how it is written down (TwiML).

use domain::Language;

/// What the caller hears next, and in which language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spoken {
    pub answer: CallAnswer,
    pub language: Language,
    /// The call's turn when this is said, if known: a choice prompt's URL names it, so that an
    /// answer to it replayed at a later turn changes nothing.
    pub turn: Option<u32>,
}

impl Spoken {
    pub fn new(answer: CallAnswer, language: Language) -> Self {
        Self {
            answer,
            language,
            turn: None,
        }
    }

    /// Said at the call's turn `turn`.
    #[must_use]
    pub fn at_turn(mut self, turn: u32) -> Self {
        self.turn = Some(turn);
        self
    }
}

/// The next thing the caller hears. Every variant leads somewhere: none ends in silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAnswer {
    /// The call's first answer: the greeting, with the recording of the whole call started
    /// where the deployment records calls.
    Welcome,
    /// Disclosure, greeting, the way to a counselor, then the first turn (again, or in the
    /// language the caller chose).
    Greeting,
    /// The caller's words were received: a holding line, a pause, then ask again (continue).
    /// `waited` counts the holds so far, so that the wait is bounded.
    Hold { waited: u32 },
    /// The reply to the caller's last turn, then the choice.
    Reply { text: String },
    /// The reply to the caller's first turn, then the direct question: "are you having
    /// thoughts of suicide?", by speech or keys. Asked once per call.
    Question { reply: String },
    /// The caller answered the direct question with a clear no: thanks, then the choice.
    AfterQuestion,
    /// Record another turn.
    Listen,
    /// The choice was not understood: offer it again.
    ChoiceAgain,
    /// Crisis resources, goodbye, hang up (the caller chose to end).
    Goodbye,
    /// Connect the caller to the counselor line (crisis line if no answer).
    ConnectCounselor,
    /// The counselor rung before did not take the call: a short holding line, then the next
    /// counselor in order (`attempt`, from 1).
    NextCounselor { attempt: u32 },
    /// The caller's risk calls for a person: no automated reply, a counselor is dialled.
    Escalating,
    /// The counselor line did not answer: connect to the crisis line.
    ConnectCrisisLine,
    /// Nobody could be reached: the crisis number, and the automated line listens again.
    LastResort,
    /// A connected counselor call ended: thank the caller and hang up.
    Farewell,
    /// Something on our side failed: a short human message, the crisis number, and a person.
    Trouble,
    /// Nothing was heard where speech was expected: a person is dialled.
    NothingHeard,
    /// The caller already heard why (over the live session): a person is dialled at once.
    PutThrough,
    /// The call's record says it is over, yet Twilio asks what the caller hears: the record may
    /// be wrong (a terminal status out of order), so whoever is on the line is put through to a
    /// person. Nothing is recorded. (Where nobody is left, Twilio ignores the answer.)
    Nothing,
}
