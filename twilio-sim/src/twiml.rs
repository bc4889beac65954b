//! TwiML as Twilio reads it, for the simulator: a `<Response>` of verbs, each with its attributes.
//! Anything Twilio would refuse (not XML, another root, an unknown verb, a verb where it may not
//! nest) is an error, as it would be an application error on a real call.

use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// A verb and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Verb {
    pub name: String,
    pub attributes: HashMap<String, String>,
    /// The text inside (`<Say>` text, a `<Redirect>` or `<Play>` URL).
    pub text: String,
    /// Nested verbs (`<Gather>`'s prompts) or nouns (`<Dial>`'s `<Number>`s, `<Connect>`'s
    /// `<ConversationRelay>`, its `<Language>`s and `<Parameter>`s).
    pub children: Vec<Verb>,
}

impl Verb {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
}

const VERBS: &[&str] = &[
    "Say", "Play", "Pause", "Record", "Gather", "Redirect", "Dial", "Hangup", "Reject", "Connect",
    "Start",
];
const IN_GATHER: &[&str] = &["Say", "Play", "Pause"];
const IN_DIAL: &[&str] = &["Number", "Client", "Sip", "Conference", "Queue"];
// The simulator plays only ConversationRelay's side of `<Connect>`, not `<Stream>`'s media.
const IN_CONNECT: &[&str] = &["ConversationRelay"];
const IN_RELAY: &[&str] = &["Language", "Parameter"];
// The simulator plays only the call's recording of `<Start>`, not `<Stream>` or `<Siprec>`.
const IN_START: &[&str] = &["Recording"];

fn element(start: &BytesStart<'_>) -> Result<Verb, String> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut attributes = HashMap::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| format!("a malformed attribute on <{name}>: {e}"))?;
        let value = attribute
            .unescape_value()
            .map_err(|e| format!("a malformed attribute on <{name}>: {e}"))?;
        attributes.insert(
            String::from_utf8_lossy(attribute.key.as_ref()).into_owned(),
            value.into_owned(),
        );
    }
    Ok(Verb {
        name,
        attributes,
        text: String::new(),
        children: Vec::new(),
    })
}

/// Reads a TwiML document into its verbs.
pub fn parse(xml: &str) -> Result<Vec<Verb>, String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Verb> = Vec::new();
    let mut root_seen = false;
    let mut verbs = Vec::new();
    loop {
        match reader.read_event().map_err(|e| format!("not XML: {e}"))? {
            Event::Start(start) => {
                let verb = element(&start)?;
                open(&mut stack, &mut root_seen, verb.clone())?;
                stack.push(verb);
            }
            Event::Empty(start) => {
                let verb = element(&start)?;
                open(&mut stack, &mut root_seen, verb.clone())?;
                close(&mut stack, &mut verbs, verb);
            }
            Event::End(_) => {
                if let Some(verb) = stack.pop() {
                    close(&mut stack, &mut verbs, verb);
                }
            }
            Event::Text(text) => {
                let text = text.decode().map_err(|e| format!("bad text: {e}"))?;
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&text);
                } else if !text.trim().is_empty() {
                    return Err("text outside <Response>".into());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference
                    .resolve_char_ref()
                    .map_err(|e| format!("a bad character reference: {e}"))?
                {
                    Some(c) => c.to_string(),
                    None => {
                        let name = reference
                            .decode()
                            .map_err(|e| format!("a bad reference: {e}"))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("an unknown entity &{name};"))?
                            .to_owned()
                    }
                };
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&resolved);
                }
            }
            Event::CData(data) => {
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(format!("unclosed <{}>", open.name));
                }
                break;
            }
            _ => {}
        }
    }
    if !root_seen {
        return Err("no <Response> element".into());
    }
    Ok(verbs)
}

/// Checks that `verb` may open where it is.
fn open(stack: &mut [Verb], root_seen: &mut bool, verb: Verb) -> Result<(), String> {
    match stack.last() {
        None if verb.name == "Response" && !*root_seen => {
            *root_seen = true;
            Ok(())
        }
        None => Err(format!(
            "the root must be one <Response>, not <{}>",
            verb.name
        )),
        Some(parent) if parent.name == "Response" => VERBS
            .contains(&verb.name.as_str())
            .then_some(())
            .ok_or_else(|| format!("<{}> is not a TwiML verb", verb.name)),
        Some(parent) if parent.name == "Gather" => IN_GATHER
            .contains(&verb.name.as_str())
            .then_some(())
            .ok_or_else(|| format!("<{}> may not be inside <Gather>", verb.name)),
        Some(parent) if parent.name == "Dial" => IN_DIAL
            .contains(&verb.name.as_str())
            .then_some(())
            .ok_or_else(|| format!("<{}> may not be inside <Dial>", verb.name)),
        Some(parent) if parent.name == "Connect" => IN_CONNECT
            .contains(&verb.name.as_str())
            .then_some(())
            .ok_or_else(|| format!("<{}> may not be inside <Connect> here", verb.name)),
        Some(parent) if parent.name == "Start" => IN_START
            .contains(&verb.name.as_str())
            .then_some(())
            .ok_or_else(|| format!("<{}> may not be inside <Start> here", verb.name)),
        Some(parent) if parent.name == "ConversationRelay" => IN_RELAY
            .contains(&verb.name.as_str())
            .then_some(())
            .ok_or_else(|| format!("<{}> may not be inside <ConversationRelay>", verb.name)),
        Some(parent) => Err(format!(
            "<{}> may not be inside <{}>",
            verb.name, parent.name
        )),
    }
}

/// Attaches a finished element to its parent (or to the document's verbs).
fn close(stack: &mut [Verb], verbs: &mut Vec<Verb>, verb: Verb) {
    if verb.name == "Response" {
        return;
    }
    match stack.last_mut() {
        Some(parent) if parent.name != "Response" => parent.children.push(verb),
        _ => verbs.push(verb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_nested_prompts_and_dialled_numbers_are_read() {
        let verbs = parse(
            r#"<?xml version="1.0"?><Response><Gather action="/a" numDigits="1"><Say>Press &amp; hold</Say></Gather>
               <Record action="/r" finishOnKey="0#"/><Dial action="/d"><Number>+15005550001</Number></Dial><Hangup/></Response>"#,
        )
        .expect("valid");
        let names: Vec<&str> = verbs.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["Gather", "Record", "Dial", "Hangup"]);
        assert_eq!(verbs[0].children[0].text, "Press & hold");
        assert_eq!(verbs[1].attr("finishOnKey"), Some("0#"));
        assert_eq!(verbs[2].children[0].text, "+15005550001");
    }

    #[test]
    fn a_conversation_relay_and_its_nouns_are_read() {
        let verbs = parse(
            r#"<Response><Connect action="/twilio/relay-ended/c1">
                 <ConversationRelay url="wss://h.example/twilio/relay/c1" language="en-US"
                     welcomeGreeting="Hello." dtmfDetection="true">
                   <Language code="es-MX" ttsProvider="Google"/>
                   <Parameter name="callId" value="c1"/>
                 </ConversationRelay>
               </Connect><Hangup/></Response>"#,
        )
        .expect("valid");
        let names: Vec<&str> = verbs.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["Connect", "Hangup"]);
        let relay = &verbs[0].children[0];
        assert_eq!(relay.name, "ConversationRelay");
        assert_eq!(relay.attr("welcomeGreeting"), Some("Hello."));
        let nouns: Vec<&str> = relay.children.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(nouns, ["Language", "Parameter"]);
        assert_eq!(relay.children[1].attr("value"), Some("c1"));
        for (xml, says) in [
            (
                "<Response><Connect><Say>x</Say></Connect></Response>",
                "inside <Connect>",
            ),
            (
                "<Response><Connect><ConversationRelay url='ws://h'><Say>x</Say></ConversationRelay></Connect></Response>",
                "inside <ConversationRelay>",
            ),
        ] {
            let error = parse(xml).expect_err(xml);
            assert!(error.contains(says), "{xml}: {error}");
        }
    }

    #[test]
    fn what_twilio_would_refuse_is_an_error() {
        for (xml, says) in [
            ("not xml at all <", "Response"),
            ("<Html><Say>x</Say></Html>", "root"),
            ("<Response><Shout>x</Shout></Response>", "not a TwiML verb"),
            (
                "<Response><Gather><Record/></Gather></Response>",
                "inside <Gather>",
            ),
            ("<Response><Say>x</Say>", "unclosed <Response>"),
        ] {
            let error = parse(xml).expect_err(xml);
            assert!(error.contains(says), "{xml}: {error}");
        }
    }
}
