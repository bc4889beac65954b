//! Cuts a reply that arrives a few characters at a time (a language model's stream) into
//! sentences, so that each one can pass the safe-messaging guard before the caller hears it.
//!
//! A sentence ends at `.`, `!`, `?` or `…` (a run of them, with any closing quotes or brackets)
//! followed by whitespace or by a Spanish opener (`¿`, `¡`, which always begin a sentence), and at
//! every line break. These do not end one: a point inside a number (`3.5`) or a name
//! (`hotline.org`), a title (`Dr.`, `Mrs.`, `Sra.`), `e.g.` and `i.e.`, and an ellipsis or `etc.`
//! followed by a lower-case word (the sentence goes on). Whether a point ends a sentence is only
//! decided once what follows it has arrived, so a token ending in `.` holds its sentence back
//! until the next token, or until `finish`.

/// Titles and abbreviations after which a point never ends a sentence (lower case, without
/// their final point).
const NEVER_ENDS: &[&str] = &[
    "dr", "dra", "mr", "mrs", "ms", "sr", "sra", "srta", "prof", "e.g", "i.e", "vs",
];

/// Sentences out of a stream of tokens: `push` each token as it comes, then `finish`.
#[derive(Debug, Clone, Default)]
pub struct SentenceBuffer {
    /// What has arrived and is not yet known to end a sentence.
    pending: String,
}

impl SentenceBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `token` and returns the sentences it completed, in order, without their surrounding
    /// whitespace (often none: most tokens are inside a sentence).
    pub fn push(&mut self, token: &str) -> Vec<String> {
        self.pending.push_str(token);
        let mut sentences = Vec::new();
        while let Some(cut) = next_cut(&self.pending) {
            let sentence = self.pending[..cut].trim();
            if !sentence.is_empty() {
                sentences.push(sentence.to_owned());
            }
            self.pending.drain(..cut);
            // A line break is a cut of its own; it is nobody's sentence.
            if self.pending.starts_with('\n') {
                self.pending.remove(0);
            }
        }
        sentences
    }

    /// What has arrived since the last sentence, which the next tokens may still complete.
    pub fn pending(&self) -> &str {
        &self.pending
    }

    /// The rest once the stream is over: a last sentence without a final point, or `None` when
    /// nothing but whitespace is left.
    pub fn finish(self) -> Option<String> {
        let rest = self.pending.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }
}

/// Where the first sentence in `text` ends (a byte offset), if that is known yet.
fn next_cut(text: &str) -> Option<usize> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let offset = |i: usize| chars.get(i).map_or(text.len(), |&(at, _)| at);
    let mut i = 0;
    while let Some(&(at, c)) = chars.get(i) {
        if c == '\n' {
            return Some(at);
        }
        if !is_terminator(c) {
            i += 1;
            continue;
        }
        let start = i;
        while chars.get(i).is_some_and(|&(_, c)| is_terminator(c)) {
            i += 1;
        }
        let run = &text[offset(start)..offset(i)];
        while chars.get(i).is_some_and(|&(_, c)| is_closer(c)) {
            i += 1;
        }
        let after = chars[i..].iter().map(|&(_, c)| c);
        if ends_sentence(&text[..offset(start)], run, after)? {
            return Some(offset(i));
        }
    }
    None
}

/// Whether the terminators `run`, after `before` and followed by `after`, end a sentence; `None`
/// while what follows has not arrived.
fn ends_sentence(before: &str, run: &str, mut after: impl Iterator<Item = char>) -> Option<bool> {
    let next = after.next()?;
    if is_opener(next) {
        return Some(true);
    }
    if !next.is_whitespace() {
        return Some(false);
    }
    let word = last_word(before).to_lowercase();
    if run == "." && NEVER_ENDS.contains(&word.as_str()) {
        return Some(false);
    }
    let ellipsis = run.contains('…') || run.contains("..");
    let goes_on_in_lower_case = ellipsis || (run == "." && word == "etc");
    if !goes_on_in_lower_case {
        return Some(true);
    }
    // An ellipsis or `etc.` ends the sentence unless a lower-case word carries it on.
    if next == '\n' {
        return Some(true);
    }
    match after.find(|c| !c.is_whitespace() || *c == '\n')? {
        '\n' => Some(true),
        c => Some(!c.is_lowercase()),
    }
}

/// The word just before a point, without any opening quote or bracket.
fn last_word(text: &str) -> &str {
    let word = text
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or_default();
    word.trim_start_matches(|c: char| !c.is_alphanumeric())
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…')
}

/// What may close a sentence after its point: `."`, `?)`, `!»`.
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | '»' | ')' | ']')
}

/// Spanish opening marks, which begin a sentence wherever they stand.
fn is_opener(c: char) -> bool {
    matches!(c, '¿' | '¡')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `tokens` one by one and returns every sentence, the rest last.
    fn sentences(tokens: &[&str]) -> Vec<String> {
        let mut buffer = SentenceBuffer::new();
        let mut out: Vec<String> = tokens.iter().flat_map(|t| buffer.push(t)).collect();
        out.extend(buffer.finish());
        out
    }

    /// The same text, one character per token: boundaries must not depend on where tokens split.
    fn by_chars(text: &str) -> Vec<String> {
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let tokens: Vec<&str> = chars.iter().map(String::as_str).collect();
        sentences(&tokens)
    }

    fn whole_and_by_chars(text: &str, expected: &[&str]) {
        assert_eq!(sentences(&[text]), expected, "{text:?} whole");
        assert_eq!(by_chars(text), expected, "{text:?} by characters");
    }

    #[test]
    fn sentences_come_out_as_the_token_that_completes_them_arrives() {
        let mut buffer = SentenceBuffer::new();
        assert!(buffer.push("Tha").is_empty());
        assert!(buffer.push("nk you for call").is_empty());
        // The point could still be a decimal or a title: the sentence waits for what follows.
        assert!(buffer.push("ing.").is_empty());
        assert_eq!(buffer.push(" I'm"), ["Thank you for calling."]);
        assert_eq!(buffer.pending(), " I'm");
        assert_eq!(
            buffer.push(" here. How are you? Tell"),
            ["I'm here.", "How are you?"]
        );
        assert!(buffer.push(" me").is_empty());
        assert_eq!(buffer.finish().as_deref(), Some("Tell me"));
    }

    #[test]
    fn every_terminator_ends_a_sentence_followed_by_whitespace() {
        whole_and_by_chars(
            "That sounds hard! Are you safe? I hear you… Thank you.",
            &[
                "That sounds hard!",
                "Are you safe?",
                "I hear you…",
                "Thank you.",
            ],
        );
        whole_and_by_chars(
            "Really?! She said \"stop.\" Then (quietly.) Good",
            &["Really?!", "She said \"stop.\"", "Then (quietly.)", "Good"],
        );
    }

    #[test]
    fn decimals_and_dotted_names_do_not_end_a_sentence() {
        whole_and_by_chars(
            "It took 3.5 hours. Visit hotline.org later.",
            &["It took 3.5 hours.", "Visit hotline.org later."],
        );
        assert_eq!(
            sentences(&["It took 3", ".", "5 hours."]),
            ["It took 3.5 hours."]
        );
    }

    #[test]
    fn titles_and_abbreviations_do_not_end_a_sentence() {
        whole_and_by_chars(
            "Dr. Lee and Mrs. Park spoke. Ms. Cruz and Mr. Diaz too.",
            &["Dr. Lee and Mrs. Park spoke.", "Ms. Cruz and Mr. Diaz too."],
        );
        whole_and_by_chars(
            "La Sra. García y el Sr. Ruiz llamaron. Bien.",
            &["La Sra. García y el Sr. Ruiz llamaron.", "Bien."],
        );
        whole_and_by_chars(
            "Try something small, e.g. a walk. Or rest (i.e. sleep).",
            &["Try something small, e.g. a walk.", "Or rest (i.e. sleep)."],
        );
    }

    #[test]
    fn etc_ends_a_sentence_only_when_a_new_one_begins() {
        whole_and_by_chars(
            "Music, walks, etc. can help. We talked about work, family, etc. Then we rested.",
            &[
                "Music, walks, etc. can help.",
                "We talked about work, family, etc.",
                "Then we rested.",
            ],
        );
        // At the end of the stream, `etc.` ends the last sentence.
        assert_eq!(sentences(&["Work, family, etc."]), ["Work, family, etc."]);
    }

    #[test]
    fn an_ellipsis_followed_by_lower_case_goes_on() {
        whole_and_by_chars(
            "I see... that sounds hard. Well... That is a lot. Bueno… ¿y tú?",
            &[
                "I see... that sounds hard.",
                "Well...",
                "That is a lot.",
                "Bueno…",
                "¿y tú?",
            ],
        );
        let mut buffer = SentenceBuffer::new();
        // Until the next word arrives, the ellipsis may be mid-sentence.
        assert!(buffer.push("Well... ").is_empty());
        assert!(buffer.push("  ").is_empty());
        assert_eq!(buffer.push("Okay."), ["Well..."]);
    }

    #[test]
    fn spanish_openers_begin_a_sentence_even_without_a_space() {
        whole_and_by_chars(
            "¿Cómo estás? ¡Qué bien! Gracias.¿Quieres hablar? Claro.¡Ánimo!",
            &[
                "¿Cómo estás?",
                "¡Qué bien!",
                "Gracias.",
                "¿Quieres hablar?",
                "Claro.",
                "¡Ánimo!",
            ],
        );
        // An opener inside a sentence does not cut it.
        whole_and_by_chars("Si quieres, ¿hablamos?", &["Si quieres, ¿hablamos?"]);
    }

    #[test]
    fn a_line_break_ends_a_sentence_and_blank_lines_are_nobody_s() {
        whole_and_by_chars(
            "First thought\nSecond one.\n\n  \nThird\r\nFourth... \nfifth",
            &[
                "First thought",
                "Second one.",
                "Third",
                "Fourth...",
                "fifth",
            ],
        );
    }

    #[test]
    fn boundaries_split_across_tokens_are_found() {
        assert_eq!(
            sentences(&["Hello", ".", " ", "How", " are you", "?", "\"", " Fine"]),
            ["Hello.", "How are you?\"", "Fine"]
        );
        assert_eq!(
            sentences(&["See D", "r", ". Lee. ", "Bye"]),
            ["See Dr. Lee.", "Bye"]
        );
        assert_eq!(
            sentences(&["Wait", ".", ".", ".", " what?"]),
            ["Wait... what?"]
        );
    }

    #[test]
    fn nothing_but_whitespace_finishes_as_nothing() {
        assert_eq!(SentenceBuffer::new().finish(), None);
        let mut buffer = SentenceBuffer::new();
        assert!(buffer.push("  \n \n").is_empty());
        assert_eq!(buffer.finish(), None);
    }
}
