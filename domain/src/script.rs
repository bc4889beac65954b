//! The vetted words Hotline says, in English and in Spanish. Every sentence a caller can hear that
//! is not generated lives here, so that it can be reviewed by clinicians (and translators) in one
//! place. Numbers are passed in, never hard-coded, except where a sentence must still make sense
//! when configuration is unavailable.

use crate::phone::DialNumber;
use crate::risk::{Language, RiskLevel};

use Language::{English, Spanish};

/// How the caller's words are taken: recorded after a tone (they end with the pound key), or
/// recognised as they speak (speech and live modes). The prompts say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listening {
    AfterTone,
    AsTheySpeak,
}

/// The greeting: who we are, that the line is automated and recorded, and the way to a human.
pub fn greeting(language: Language) -> &'static str {
    match language {
        English => {
            "Thank you for calling. You've reached an automated support line, and this call is \
             recorded so we can help you. You can press 0 at any time to talk with a counselor."
        }
        Spanish => {
            "Gracias por llamar. Se ha comunicado con una línea de apoyo automatizada, y esta \
             llamada se graba para poder ayudarle. Puede oprimir 0 en cualquier momento para \
             hablar con un consejero."
        }
    }
}

/// The offer of Spanish, said in Spanish in the English greeting.
pub fn spanish_offer() -> &'static str {
    "Para español, oprima 9."
}

/// The invitation to speak that ends the greeting.
pub fn first_invitation(language: Language, listening: Listening) -> &'static str {
    match (language, listening) {
        (English, Listening::AfterTone) => {
            "After the tone, tell me what's on your mind, and press the pound key when you're done."
        }
        (English, Listening::AsTheySpeak) => "Tell me, in your own words, what's on your mind.",
        (Spanish, Listening::AfterTone) => {
            "Después del tono, cuénteme qué le preocupa, y oprima la tecla de numeral cuando \
             termine."
        }
        (Spanish, Listening::AsTheySpeak) => "Cuénteme, con sus propias palabras, qué le preocupa.",
    }
}

/// Said while the caller's words are being listened to and an answer prepared.
pub fn holding(language: Language) -> &'static str {
    match language {
        English => "Thank you. I'm listening to what you said. Please stay on the line.",
        Spanish => "Gracias. Estoy escuchando lo que me dijo. Por favor, no cuelgue.",
    }
}

/// Said on each further wait, so the caller never sits in silence.
pub fn still_holding(language: Language) -> &'static str {
    match language {
        English => "I'm still here with you. Just a moment more.",
        Spanish => "Sigo aquí con usted. Solo un momento más.",
    }
}

/// The scripted reply used until a generated one is available.
pub fn scripted_reply(language: Language) -> &'static str {
    match language {
        English => {
            "Thank you for telling me. What you're feeling matters, and you don't have to face it \
             alone. I'm here to listen for as long as you need."
        }
        Spanish => {
            "Gracias por contármelo. Lo que siente importa, y no tiene que enfrentarlo a solas. \
             Estoy aquí para escucharle el tiempo que necesite."
        }
    }
}

/// The choice offered after every reply in record mode.
pub fn choice_prompt(language: Language) -> &'static str {
    match language {
        English => {
            "Press 1 to keep talking, press 2 to end the call, or press 0 to talk with a \
             counselor. You can also say continue, goodbye, or counselor."
        }
        Spanish => {
            "Oprima 1 para seguir hablando, oprima 2 para terminar la llamada, u oprima 0 para \
             hablar con un consejero. También puede decir seguir, adiós o consejero."
        }
    }
}

/// The direct question, asked of every caller whose first turn showed no sign of risk. Crisis
/// lines ask it plainly: asking does not put the idea in anyone's head, and it opens the door.
pub fn direct_question(language: Language) -> &'static str {
    match language {
        English => {
            "I ask everyone who calls: are you having thoughts of suicide? You can say yes, no, \
             or not sure. Or press 1 for yes, or 2 for no."
        }
        Spanish => {
            "Se lo pregunto a todas las personas que llaman: ¿está teniendo pensamientos de \
             suicidio? Puede decir sí, no, o no estoy seguro. O bien, oprima 1 para sí, o 2 \
             para no."
        }
    }
}

/// Said after a clear "no" to the direct question.
pub fn after_no(language: Language) -> &'static str {
    match language {
        English => "Thank you for answering. If that changes, a counselor is always one key away.",
        Spanish => {
            "Gracias por responder. Si eso cambia, un consejero está siempre a una tecla de \
             distancia."
        }
    }
}

/// Said when the choice was not understood.
pub fn choice_not_understood(language: Language) -> &'static str {
    match language {
        English => "Sorry, I didn't catch that.",
        Spanish => "Perdone, no le entendí.",
    }
}

/// The prompt before the caller's next turn.
pub fn listen_again(language: Language, listening: Listening) -> &'static str {
    match (language, listening) {
        (English, Listening::AfterTone) => {
            "I'm listening. Tell me more after the tone, and press the pound key when you're done."
        }
        (English, Listening::AsTheySpeak) => "I'm listening. Tell me more.",
        (Spanish, Listening::AfterTone) => {
            "Le escucho. Cuénteme más después del tono, y oprima la tecla de numeral cuando \
             termine."
        }
        (Spanish, Listening::AsTheySpeak) => "Le escucho. Cuénteme más.",
    }
}

/// Said when the caller said nothing at a recording: they can try again or reach a person.
pub fn silence(crisis_line: &DialNumber, language: Language) -> String {
    match language {
        English => format!(
            "I didn't hear anything, and that's okay. Press 1 to try again, or press 0 to talk \
             with a counselor. If you are in danger right now, you can call {}.",
            crisis_line.spoken()
        ),
        Spanish => format!(
            "No escuché nada, y está bien. Oprima 1 para intentarlo de nuevo, u oprima 0 para \
             hablar con un consejero. Si está en peligro ahora mismo, puede llamar al {}.",
            crisis_line.spoken()
        ),
    }
}

/// Said when no words could be heard where speech was expected: silence may be the hardest way
/// to call for help, so a person is dialled.
pub fn nothing_heard(crisis_line: &DialNumber, language: Language) -> String {
    match language {
        English => format!(
            "I didn't hear anything, and that's okay. I'm connecting you with a counselor, so you \
             can talk with a person. If the call drops and you are in danger, please call {}.",
            crisis_line.spoken()
        ),
        Spanish => format!(
            "No escuché nada, y está bien. Le comunico con un consejero, para que pueda hablar \
             con una persona. Si la llamada se corta y está en peligro, por favor llame al {}.",
            crisis_line.spoken()
        ),
    }
}

/// Said on the live line when the caller has been quiet for a while.
pub fn still_here(language: Language) -> &'static str {
    match language {
        English => {
            "I'm still here with you. Take your time. You can also press 0 to talk with a \
             counselor."
        }
        Spanish => {
            "Sigo aquí con usted. Tómese su tiempo. También puede oprimir 0 para hablar con un \
             consejero."
        }
    }
}

/// Said before dialling the counselor line.
pub fn connecting_counselor(language: Language) -> &'static str {
    match language {
        English => "I'm connecting you with a counselor now. Please stay on the line.",
        Spanish => "Le estoy comunicando con un consejero ahora. Por favor, no cuelgue.",
    }
}

/// Said before dialling the crisis line when the counselor line did not answer.
pub fn connecting_crisis_line(language: Language) -> &'static str {
    match language {
        English => {
            "Our counselors aren't available right this moment, so I'm connecting you to the \
             crisis line. Please stay on the line."
        }
        Spanish => {
            "Nuestros consejeros no están disponibles en este momento, así que le comunico con \
             la línea de crisis. Por favor, no cuelgue."
        }
    }
}

/// The goodbye, with the resources a caller needs to come back.
pub fn goodbye(crisis_line: &DialNumber, language: Language) -> String {
    match language {
        English => format!(
            "Thank you for calling. If you need to talk again, you can call this line any time, or \
             call or text {} to reach the crisis line, day or night. Take care of yourself. Goodbye.",
            crisis_line.spoken()
        ),
        Spanish => format!(
            "Gracias por llamar. Si necesita hablar de nuevo, puede llamar a esta línea cuando \
             quiera, o llamar o enviar un mensaje de texto al {} para comunicarse con la línea de \
             crisis, de día o de noche. Cuídese mucho. Adiós.",
            crisis_line.spoken()
        ),
    }
}

/// What the caller hears when something on our side failed: short, human, and with the way out.
pub fn trouble(crisis_line: &DialNumber, language: Language) -> String {
    match language {
        English => format!(
            "I'm sorry, I'm having trouble right now, but you are not alone. I'm connecting you \
             with a person. If the call drops, please call {}.",
            crisis_line.spoken()
        ),
        Spanish => format!(
            "Lo siento, estoy teniendo problemas en este momento, pero no está solo. Le comunico \
             con una persona. Si la llamada se corta, por favor llame al {}.",
            crisis_line.spoken()
        ),
    }
}

/// Said while the next counselor is rung, after one did not take the call.
pub fn trying_another(crisis_line: &DialNumber, language: Language) -> String {
    match language {
        English => format!(
            "Please stay with me. I'm reaching another counselor for you now. If the call drops, \
             you can call {} at any time.",
            crisis_line.spoken()
        ),
        Spanish => format!(
            "Por favor, siga en la línea. Estoy buscando a otro consejero para usted. Si la \
             llamada se corta, puede llamar al {} en cualquier momento.",
            crisis_line.spoken()
        ),
    }
}

/// Said when neither the counselor line nor the crisis line answered; the caller can go on talking.
pub fn last_resort(crisis_line: &DialNumber, language: Language, listening: Listening) -> String {
    let go_on = match (language, listening) {
        (English, Listening::AfterTone) => "after the tone, you can keep talking with me.",
        (English, Listening::AsTheySpeak) => "you can keep talking with me.",
        (Spanish, Listening::AfterTone) => "después del tono, puede seguir hablando conmigo.",
        (Spanish, Listening::AsTheySpeak) => "puede seguir hablando conmigo.",
    };
    match language {
        English => format!(
            "I'm sorry, I couldn't connect you with someone just now. You can call {} at any \
             time, day or night. You are not alone, and I'm still here: {go_on}",
            crisis_line.spoken()
        ),
        Spanish => format!(
            "Lo siento, no pude comunicarle con alguien en este momento. Puede llamar al {} en \
             cualquier momento, de día o de noche. No está solo, y sigo aquí: {go_on}",
            crisis_line.spoken()
        ),
    }
}

/// After a connected call with a counselor ends.
pub fn farewell(language: Language) -> &'static str {
    match language {
        English => "Thank you for calling. Take care of yourself. Goodbye.",
        Spanish => "Gracias por llamar. Cuídese mucho. Adiós.",
    }
}

/// The vetted reply for a turn assessed at `level`: the default responder, used whenever no
/// generated reply is available or the guard blocked one. High and imminent risk get no reply at
/// all (see `escalating`).
pub fn reply_for(level: RiskLevel, language: Language) -> &'static str {
    match (level, language) {
        (RiskLevel::None | RiskLevel::Low, _) => scripted_reply(language),
        (_, English) => {
            "Thank you for trusting me with that. It sounds like you are in a lot of pain right \
             now, and you deserve support with it. I'm here with you, and a counselor is one key \
             away: press 0 at any time."
        }
        (_, Spanish) => {
            "Gracias por confiarme eso. Parece que está pasando por mucho dolor en este momento, \
             y merece apoyo. Estoy aquí con usted, y un consejero está a una tecla de distancia: \
             oprima 0 en cualquier momento."
        }
    }
}

/// Said instead of a reply when the risk is high, imminent or unknown, before a person is dialled.
pub fn escalating(language: Language) -> &'static str {
    match language {
        English => {
            "What you've shared matters, and I want you to be able to talk with a person right \
             now. I'm connecting you with a counselor. Please stay on the line."
        }
        Spanish => {
            "Lo que me ha contado importa, y quiero que pueda hablar con una persona ahora mismo. \
             Le comunico con un consejero. Por favor, no cuelgue."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_line(language: Language) -> Vec<String> {
        let crisis = DialNumber::parse("988").expect("valid");
        let mut lines: Vec<String> = [
            greeting(language),
            holding(language),
            still_holding(language),
            scripted_reply(language),
            choice_prompt(language),
            direct_question(language),
            after_no(language),
            choice_not_understood(language),
            connecting_counselor(language),
            connecting_crisis_line(language),
            farewell(language),
            escalating(language),
            still_here(language),
            reply_for(RiskLevel::Moderate, language),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for listening in [Listening::AfterTone, Listening::AsTheySpeak] {
            lines.push(first_invitation(language, listening).to_owned());
            lines.push(listen_again(language, listening).to_owned());
            lines.push(last_resort(&crisis, language, listening));
        }
        lines.extend([
            silence(&crisis, language),
            nothing_heard(&crisis, language),
            goodbye(&crisis, language),
            trouble(&crisis, language),
            trying_another(&crisis, language),
        ]);
        lines
    }

    #[test]
    fn every_vetted_line_passes_the_guard_in_both_languages() {
        for language in [English, Spanish] {
            for line in every_line(language) {
                assert_eq!(crate::risk::guard_reply(&line), Ok(()), "{line}");
            }
        }
    }

    #[test]
    fn spanish_lines_are_read_as_spanish_and_english_ones_as_english() {
        for (language, expected) in [(English, English), (Spanish, Spanish)] {
            // A short line may be too little text to tell; no longer one is read as the other.
            for line in every_line(language)
                .into_iter()
                .filter(|l| l.split_whitespace().count() >= 8)
            {
                let read = crate::risk::screen(&line).language;
                assert_ne!(
                    read,
                    Some(if expected == English {
                        Spanish
                    } else {
                        English
                    }),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn the_way_out_is_in_every_language() {
        let crisis = DialNumber::parse("988").expect("valid");
        for language in [English, Spanish] {
            assert!(greeting(language).contains('0'));
            assert!(goodbye(&crisis, language).contains("9 8 8"));
            assert!(trouble(&crisis, language).contains("9 8 8"));
            assert!(trying_another(&crisis, language).contains("9 8 8"));
            assert!(nothing_heard(&crisis, language).contains("9 8 8"));
        }
    }
}
