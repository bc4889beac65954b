//! Server-Sent Events, as an OpenAI-compatible server streams a completion: `data:` lines, each
//! event ended by a blank line, `:` comments as keep-alives. The body arrives in chunks that may
//! split a line, or a character, anywhere; lines end in LF or CRLF.
//!
//! Strict where the format allows leniency: a line that is not an event field means the body is
//! not an event stream at all (a JSON error page, an HTML proxy page), and is refused.

/// The longest line read; a longer one means the body is not the stream asked for.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Why the body is not a readable event stream. Says nothing of what the body held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum SseError {
    #[error("a line of the event stream is not UTF-8")]
    NotUtf8,
    #[error("a line of the body is not an event field")]
    NotAnEventField,
    #[error("a line of the event stream is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
}

/// Events out of a body's chunks: `feed` each chunk as it comes, then `finish`.
#[derive(Debug, Default)]
pub(super) struct EventDecoder {
    /// The bytes of a line not yet ended.
    line: Vec<u8>,
    /// The data of the event being read, once it has a `data:` line.
    data: Option<String>,
}

impl EventDecoder {
    /// Reads `chunk` and returns the data of every event it completed, in order.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, SseError> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.extend_line(&rest[..end])?;
            let line = std::mem::take(&mut self.line);
            events.extend(self.read_line(&line)?);
            rest = &rest[end + 1..];
        }
        self.extend_line(rest)?;
        Ok(events)
    }

    /// The data of the last event when the body ended without the blank line that closes it.
    pub(super) fn finish(mut self) -> Result<Option<String>, SseError> {
        let line = std::mem::take(&mut self.line);
        if let Some(data) = self.read_line(&line)? {
            return Ok(Some(data));
        }
        Ok(self.data.take())
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(SseError::LineTooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// Reads one whole line; a blank one completes the event being read.
    fn read_line(&mut self, line: &[u8]) -> Result<Option<String>, SseError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.is_empty() {
            return Ok(self.data.take());
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
                Ok(None)
            }
            "event" | "id" | "retry" => Ok(None),
            _ => Err(SseError::NotAnEventField),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = ": keep-alive\n\
        data: {\"a\":\"héllo\"}\n\n\
        event: message\r\n\
        id: 2\r\n\
        data: first\r\n\
        data: second\r\n\r\n\
        data: [DONE]\n\n";

    fn events(chunks: &[&[u8]]) -> Result<Vec<String>, SseError> {
        let mut decoder = EventDecoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(decoder.feed(chunk)?);
        }
        out.extend(decoder.finish()?);
        Ok(out)
    }

    #[test]
    fn events_are_read_wherever_the_chunks_split_lines_and_characters() {
        let expected = ["{\"a\":\"héllo\"}", "first\nsecond", "[DONE]"];
        let bytes = STREAM.as_bytes();
        assert_eq!(events(&[bytes]).expect("reads"), expected);
        // Every split in two, including inside the two-byte `é` and between CR and LF.
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(events(&[a, b]).expect("reads"), expected, "split at {at}");
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(events(&bytewise).expect("reads"), expected);
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_still_read() {
        assert_eq!(events(&[b"data: [DONE]"]).expect("reads"), ["[DONE]"]);
        assert_eq!(events(&[b"data: [DONE]\n"]).expect("reads"), ["[DONE]"]);
    }

    #[test]
    fn a_body_that_is_not_an_event_stream_is_refused() {
        for body in [
            &b"{\"error\": {\"message\": \"the caller said...\"}}"[..],
            b"<html>Bad gateway</html>\n",
            b"not an event stream\n\n",
        ] {
            assert_eq!(events(&[body]), Err(SseError::NotAnEventField));
        }
        assert_eq!(events(&[b"data: \xff\xfe\n\n"]), Err(SseError::NotUtf8));
        let endless = vec![b'a'; MAX_LINE_BYTES + 1];
        assert_eq!(events(&[b"data: ", &endless]), Err(SseError::LineTooLong));
    }
}
