//! Operators' use cases: placing a test call to a number on the allow-list.

use std::sync::Arc;

use domain::{CallSid, DialNumber};

use crate::ports::{CallPlacer, PortError};

/// Why a test call was not placed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TestCallError {
    /// The number is not in E.164 form.
    #[error("to_number must be an E.164 number: + and 8 to 15 digits")]
    NotE164,
    /// The number is not on the allow-list.
    #[error("to_number is not on the test-call allow-list (TEST_CALL_ALLOWED_NUMBERS)")]
    NotAllowed,
    /// There is no number to call from.
    #[error("test calls need TWILIO_PHONE_NUMBER, the number they are placed from")]
    NoCallerNumber,
    /// Twilio refused or failed.
    #[error("Twilio did not place the call: {0}")]
    Twilio(#[source] PortError),
}

/// Places test calls: only to the configured numbers, from the line's own number.
#[derive(Clone)]
pub struct TestCalls {
    placer: Arc<dyn CallPlacer>,
    from: Option<DialNumber>,
    allowed: Vec<DialNumber>,
}

impl std::fmt::Debug for TestCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCalls")
            .field("allowed", &self.allowed.len())
            .finish_non_exhaustive()
    }
}

impl TestCalls {
    pub fn new(
        placer: Arc<dyn CallPlacer>,
        from: Option<DialNumber>,
        allowed: Vec<DialNumber>,
    ) -> Self {
        Self {
            placer,
            from,
            allowed,
        }
    }

    /// Calls `to`, which Hotline then answers as it answers any caller.
    pub async fn place(&self, to: &str) -> Result<CallSid, TestCallError> {
        let to = DialNumber::parse(to)
            .ok()
            .filter(|n| n.as_str().starts_with('+'))
            .ok_or(TestCallError::NotE164)?;
        if !self.allowed.contains(&to) {
            return Err(TestCallError::NotAllowed);
        }
        let from = self.from.as_ref().ok_or(TestCallError::NoCallerNumber)?;
        self.placer
            .place_call(&to, from)
            .await
            .map_err(TestCallError::Twilio)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    #[derive(Default)]
    struct Placer {
        placed: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl CallPlacer for Placer {
        async fn place_call(
            &self,
            to: &DialNumber,
            _from: &DialNumber,
        ) -> Result<CallSid, PortError> {
            self.placed
                .lock()
                .expect("not poisoned")
                .push(to.as_str().to_owned());
            Ok(CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("valid"))
        }
    }

    fn number(n: &str) -> DialNumber {
        DialNumber::parse(n).expect("valid")
    }

    #[tokio::test]
    async fn only_allowed_e164_numbers_are_called_and_only_with_a_number_to_call_from() {
        let placer = Arc::new(Placer::default());
        let calls = TestCalls::new(
            placer.clone(),
            Some(number("+15005550006")),
            vec![number("+15005550010")],
        );
        assert_eq!(calls.place("988").await, Err(TestCallError::NotE164));
        assert_eq!(calls.place("+1 500").await, Err(TestCallError::NotE164));
        assert_eq!(
            calls.place("+15005550011").await,
            Err(TestCallError::NotAllowed)
        );
        assert!(calls.place("+15005550010").await.is_ok());
        assert_eq!(*placer.placed.lock().expect("ok"), ["+15005550010"]);

        let no_from = TestCalls::new(placer.clone(), None, vec![number("+15005550010")]);
        assert_eq!(
            no_from.place("+15005550010").await,
            Err(TestCallError::NoCallerNumber)
        );
        assert_eq!(placer.placed.lock().expect("ok").len(), 1);
    }
}
