//! The languages a call is held in. The screener reads English and Spanish, and every vetted
//! sentence a caller can hear exists in both (`script`), so a call is in one of the two.

use crate::risk::Language;

impl Language {
    /// The BCP-47 tag Twilio is given for speech recognition and text-to-speech. Twilio needs a
    /// full tag (`es` alone is refused); `es-US` serves Spanish speakers on a US line.
    pub fn tag(self) -> &'static str {
        match self {
            Self::English => "en-US",
            Self::Spanish => "es-US",
        }
    }

    /// The primary subtag (`en`, `es`), as ConversationRelay reports a prompt's language.
    pub fn code(self) -> &'static str {
        match self {
            Self::English => "en",
            Self::Spanish => "es",
        }
    }

    /// The language of a BCP-47 tag (`es-MX`, `en`, `ES-us`), if it is one of the call's.
    pub fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Self::English),
            "es" => Some(Self::Spanish),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_regional_variants_are_understood() {
        for language in [Language::English, Language::Spanish] {
            assert_eq!(Language::from_tag(language.tag()), Some(language));
            assert_eq!(Language::from_tag(language.code()), Some(language));
        }
        assert_eq!(Language::from_tag("es-MX"), Some(Language::Spanish));
        assert_eq!(Language::from_tag("EN_gb"), Some(Language::English));
        assert_eq!(Language::from_tag("fr-FR"), None);
        assert_eq!(Language::from_tag(""), None);
    }
}
