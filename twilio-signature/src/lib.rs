//! `X-Twilio-Signature` validation, as the official SDKs do it (twilio-python's
//! `RequestValidator`, twilio-go's `Validate`): HMAC-SHA1 keyed with the auth token over the full
//! URL Twilio requested followed by the form parameters sorted by name (each name's values sorted
//! and deduplicated), base64; compared in constant time; with the URL tried as given, without its
//! port and with the scheme's default port, because Twilio does not sign consistently.
//!
//! The URL is rebuilt from the configured public base URL, never from `Host` or `X-Forwarded-*`,
//! which a caller controls.
//!
//! A ConversationRelay WebSocket upgrade is signed too, with a difference: it is a GET with no
//! body, Twilio dialled the `wss://` form of the URL (not the `https://` one a framework sees
//! behind a proxy), and Twilio's own SDKs sign it over the URL without its query string, with the
//! query's pairs as the parameters. Both forms are accepted, the split one first.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Why a request was not accepted as Twilio's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Twilio-Signature` header.
    #[error("the request has no X-Twilio-Signature header")]
    Missing,
    /// The signature matches no configured auth token.
    #[error("the X-Twilio-Signature does not match the request")]
    Mismatch,
    /// The request asks for a signing scheme we do not hold a key for (Twilio's shared-key beta).
    #[error("the request is signed with a shared key, which this service is not configured for")]
    UnsupportedScheme,
}

/// Checks that webhooks come from Twilio.
pub struct SignatureValidator {
    public_base_url: String,
    auth_tokens: Vec<SecretString>,
}

impl std::fmt::Debug for SignatureValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureValidator")
            .field("public_base_url", &self.public_base_url)
            .field("auth_tokens", &self.auth_tokens.len())
            .finish()
    }
}

impl SignatureValidator {
    /// A validator for requests to `public_base_url` (scheme, host, optional port, optional path
    /// prefix; no trailing slash needed) signed with any of `auth_tokens` (several during rotation).
    pub fn new(public_base_url: &str, auth_tokens: Vec<SecretString>) -> Self {
        Self {
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
            auth_tokens,
        }
    }

    /// The URL Twilio requested, for a request whose path and query were `path_and_query`.
    pub fn url_for(&self, path_and_query: &str) -> String {
        format!("{}{}", self.public_base_url, path_and_query)
    }

    /// Validates a form-encoded webhook. `params` are the decoded body pairs, all of them, in any
    /// order, repeated and empty ones included; `signature_settings` is the
    /// `X-Twilio-Webhooks-Signature-Settings` header.
    pub fn validate(
        &self,
        path_and_query: &str,
        params: &[(String, String)],
        signature: Option<&str>,
        signature_settings: Option<&str>,
    ) -> Result<(), SignatureError> {
        let signature = signature.ok_or(SignatureError::Missing)?;
        if signature_settings.is_some() {
            return Err(SignatureError::UnsupportedScheme);
        }
        let url = self.url_for(path_and_query);
        let suffix = params_suffix(params);
        let candidates = [remove_port(&url), add_port(&url)];
        let valid = self.auth_tokens.iter().any(|token| {
            candidates.iter().flatten().any(|candidate| {
                let expected = sign(token.expose_secret(), &format!("{candidate}{suffix}"));
                bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
            })
        });
        if valid {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// Validates the `X-Twilio-Signature` of a WebSocket upgrade to `path_and_query` (a GET with
    /// no body), against the `wss://` (or, for a local `http://` base, `ws://`) form of the public
    /// URL: first the URL without its query string with the query's decoded pairs as the
    /// parameters (as Twilio's SDKs sign it), then the full URL with no parameters.
    pub fn validate_websocket(
        &self,
        path_and_query: &str,
        signature: Option<&str>,
    ) -> Result<(), SignatureError> {
        let signature = signature.ok_or(SignatureError::Missing)?;
        let url = websocket_url(&self.public_base_url, path_and_query);
        // Each port variant of the URL, in both forms; without a query string they are one.
        let mut signed: Vec<String> = Vec::new();
        for candidate in [remove_port(&url), add_port(&url)].into_iter().flatten() {
            let (without_query, pairs) = split_query(&candidate);
            signed.push(format!("{without_query}{}", params_suffix(&pairs)));
            if candidate.contains('?') {
                signed.push(candidate);
            }
        }
        let valid = self.auth_tokens.iter().any(|token| {
            signed.iter().any(|data| {
                let expected = sign(token.expose_secret(), data);
                bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
            })
        });
        if valid {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The URL Twilio dials for a ConversationRelay socket at `path_and_query`: the public base URL
/// with `https://` made `wss://` (and `http://`, for local development, `ws://`).
pub fn websocket_url(public_base_url: &str, path_and_query: &str) -> String {
    let base = public_base_url.trim_end_matches('/');
    let socket_base = match base.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => format!("wss://{rest}"),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => format!("ws://{rest}"),
        _ => base.to_owned(),
    };
    format!("{socket_base}{path_and_query}")
}

/// Signs a WebSocket upgrade to `url` (`wss://…`, as written in the TwiML) the way Twilio does:
/// over the URL without its query string, with the query's decoded pairs as the parameters.
pub fn sign_websocket(auth_token: &str, url: &str) -> String {
    let (without_query, pairs) = split_query(url);
    sign_request(auth_token, without_query, &pairs)
}

/// The URL before `?` and the query's pairs, decoded as a form is.
fn split_query(url: &str) -> (&str, Vec<(String, String)>) {
    match url.split_once('?') {
        Some((without_query, query)) => (
            without_query,
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ),
        None => (url, Vec::new()),
    }
}

/// Twilio's signature of `data` with `auth_token`: base64 of HMAC-SHA1.
pub fn sign(auth_token: &str, data: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Signs a request the way Twilio does: for tests, the simulator, and anyone checking by hand.
pub fn sign_request(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    sign(auth_token, &format!("{url}{}", params_suffix(params)))
}

/// The parameters as signed: sorted by name, each name's values sorted and deduplicated.
fn params_suffix(params: &[(String, String)]) -> String {
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, value) in params {
        by_name.entry(name).or_default().push(value);
    }
    let mut out = String::new();
    for (name, mut values) in by_name {
        values.sort_unstable();
        values.dedup();
        for value in values {
            out.push_str(name);
            out.push_str(value);
        }
    }
    out
}

/// Splits `scheme://authority/rest` into its parts, by plain string surgery: a URL library would
/// normalise the string, and Twilio signs it as it was.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some((scheme, &rest[..end], &rest[end..]))
}

fn host_and_port(authority: &str) -> (&str, Option<&str>) {
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_part = &authority[host_start..];
    // An IPv6 literal's colons are inside brackets.
    let search_from = host_part.rfind(']').unwrap_or(0);
    match host_part[search_from..].rfind(':') {
        Some(i) => {
            let at = host_start + search_from + i;
            (&authority[..at], Some(&authority[at + 1..]))
        }
        None => (authority, None),
    }
}

fn remove_port(url: &str) -> Option<String> {
    let (scheme, authority, rest) = split_url(url)?;
    let (host, _) = host_and_port(authority);
    Some(format!("{scheme}://{host}{rest}"))
}

fn add_port(url: &str) -> Option<String> {
    let (scheme, authority, rest) = split_url(url)?;
    let (host, port) = host_and_port(authority);
    let port = match port {
        Some(port) => port,
        None if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") => "443",
        None => "80",
    };
    Some(format!("{scheme}://{host}:{port}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn reference_params() -> Vec<(String, String)> {
        pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    const REFERENCE_SIGNATURE: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    fn validator(base: &str, tokens: &[&str]) -> SignatureValidator {
        SignatureValidator::new(
            base,
            tokens.iter().map(|t| SecretString::from(*t)).collect(),
        )
    }

    #[test]
    fn the_sdks_reference_vector_validates() {
        // The worked example of twilio-python's test suite.
        let v = validator("https://mycompany.com", &["12345"]);
        assert_eq!(
            v.validate(
                "/myapp.php?foo=1&bar=2",
                &reference_params(),
                Some(REFERENCE_SIGNATURE),
                None
            ),
            Ok(())
        );
        assert_eq!(
            sign_request(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &reference_params()
            ),
            REFERENCE_SIGNATURE
        );
    }

    #[test]
    fn the_sdks_other_vectors_validate_too() {
        // twilio-python's: repeated names, and the URL signed with the default port.
        let repeated = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            sign_request(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &repeated
            ),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
        let v = validator("https://mycompany.com", &["12345"]);
        assert_eq!(
            v.validate(
                "/myapp.php?foo=1&bar=2",
                &reference_params(),
                Some("kvajT1Ptam85bY51eRf/AJRuM3w="),
                None
            ),
            Ok(())
        );
    }

    #[test]
    fn parameter_order_does_not_matter_but_every_parameter_does() {
        let v = validator("https://mycompany.com", &["12345"]);
        let mut shuffled = reference_params();
        shuffled.reverse();
        assert!(v
            .validate(
                "/myapp.php?foo=1&bar=2",
                &shuffled,
                Some(REFERENCE_SIGNATURE),
                None
            )
            .is_ok());
        let mut extra = reference_params();
        extra.push(("Unknown".into(), String::new()));
        assert_eq!(
            v.validate(
                "/myapp.php?foo=1&bar=2",
                &extra,
                Some(REFERENCE_SIGNATURE),
                None
            ),
            Err(SignatureError::Mismatch)
        );
        let mut altered = reference_params();
        altered[2].1 = "1235".into();
        assert_eq!(
            v.validate(
                "/myapp.php?foo=1&bar=2",
                &altered,
                Some(REFERENCE_SIGNATURE),
                None
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_query_string_is_signed_as_sent() {
        let v = validator("https://mycompany.com", &["12345"]);
        assert!(v
            .validate(
                "/myapp.php?bar=2&foo=1",
                &reference_params(),
                Some(REFERENCE_SIGNATURE),
                None
            )
            .is_err());
        assert!(v
            .validate(
                "/myapp.php",
                &reference_params(),
                Some(REFERENCE_SIGNATURE),
                None
            )
            .is_err());
    }

    #[test]
    fn default_ports_are_tried_both_ways() {
        // Configured with :443, Twilio signed without a port…
        let v = validator("https://mycompany.com:443", &["12345"]);
        assert!(v
            .validate(
                "/myapp.php?foo=1&bar=2",
                &reference_params(),
                Some(REFERENCE_SIGNATURE),
                None
            )
            .is_ok());
        // …and configured without a port, Twilio signed with :443.
        let signed_with_port = sign_request(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &reference_params(),
        );
        let v = validator("https://mycompany.com", &["12345"]);
        assert!(v
            .validate(
                "/myapp.php?foo=1&bar=2",
                &reference_params(),
                Some(&signed_with_port),
                None
            )
            .is_ok());
    }

    #[test]
    fn a_non_default_port_must_be_configured() {
        let signed = sign_request(
            "12345",
            "https://mycompany.com:8443/hook",
            &reference_params(),
        );
        assert!(validator("https://mycompany.com:8443", &["12345"])
            .validate("/hook", &reference_params(), Some(&signed), None)
            .is_ok());
        assert!(validator("https://mycompany.com", &["12345"])
            .validate("/hook", &reference_params(), Some(&signed), None)
            .is_err());
    }

    #[test]
    fn the_scheme_is_part_of_the_signature() {
        let signed = sign_request("12345", "https://mycompany.com/hook", &reference_params());
        assert!(validator("http://mycompany.com", &["12345"])
            .validate("/hook", &reference_params(), Some(&signed), None)
            .is_err());
    }

    #[test]
    fn repeated_keys_are_sorted_and_deduplicated_like_the_python_sdk() {
        let params = pairs(&[
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "ringing"),
        ]);
        let expected = sign(
            "tok",
            "https://h.example/sStatusCallbackEventansweredStatusCallbackEventringing",
        );
        assert_eq!(
            sign_request("tok", "https://h.example/s", &params),
            expected
        );
    }

    #[test]
    fn empty_values_count() {
        let params = pairs(&[("CallerName", ""), ("CallSid", "CA1")]);
        assert_eq!(
            sign_request("tok", "https://h.example/s", &params),
            sign("tok", "https://h.example/sCallSidCA1CallerName")
        );
    }

    #[test]
    fn every_configured_token_is_accepted_during_rotation() {
        let v = validator("https://mycompany.com", &["old-token", "12345"]);
        assert!(v
            .validate(
                "/myapp.php?foo=1&bar=2",
                &reference_params(),
                Some(REFERENCE_SIGNATURE),
                None
            )
            .is_ok());
        let v = validator("https://mycompany.com", &["old-token"]);
        assert_eq!(
            v.validate(
                "/myapp.php?foo=1&bar=2",
                &reference_params(),
                Some(REFERENCE_SIGNATURE),
                None
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_missing_signature_or_a_shared_key_scheme_is_refused() {
        let v = validator("https://mycompany.com", &["12345"]);
        assert_eq!(
            v.validate("/x", &[], None, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            v.validate(
                "/myapp.php?foo=1&bar=2",
                &reference_params(),
                Some(REFERENCE_SIGNATURE),
                Some("key=KS1,algorithm=HMAC_SHA256")
            ),
            Err(SignatureError::UnsupportedScheme)
        );
    }

    fn relay_signature(url: &str) -> String {
        sign_websocket("12345", url)
    }

    #[test]
    fn the_socket_url_is_the_public_url_with_a_websocket_scheme() {
        assert_eq!(
            websocket_url("https://hotline.example/", "/twilio/relay/c1"),
            "wss://hotline.example/twilio/relay/c1"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:8080", "/twilio/relay/c1?x=1"),
            "ws://127.0.0.1:8080/twilio/relay/c1?x=1"
        );
        assert_eq!(
            websocket_url("HTTPS://hotline.example/prefix", "/r"),
            "wss://hotline.example/prefix/r"
        );
    }

    #[test]
    fn a_signed_upgrade_round_trips() {
        let v = validator("https://hotline.example", &["12345"]);
        let signature = relay_signature("wss://hotline.example/twilio/relay/c1");
        assert_eq!(
            v.validate_websocket("/twilio/relay/c1", Some(&signature)),
            Ok(())
        );
        // With no query string the signature is over the bare URL.
        assert_eq!(
            signature,
            sign("12345", "wss://hotline.example/twilio/relay/c1")
        );
        // Local development: an http:// base is dialled as ws://.
        let local = validator("http://127.0.0.1:8080", &["12345"]);
        let signature = relay_signature("ws://127.0.0.1:8080/twilio/relay/c1");
        assert_eq!(
            local.validate_websocket("/twilio/relay/c1", Some(&signature)),
            Ok(())
        );
    }

    #[test]
    fn a_wrong_token_a_tampered_path_or_no_signature_is_refused() {
        let signature = relay_signature("wss://hotline.example/twilio/relay/c1");
        assert_eq!(
            validator("https://hotline.example", &["other"])
                .validate_websocket("/twilio/relay/c1", Some(&signature)),
            Err(SignatureError::Mismatch)
        );
        let v = validator("https://hotline.example", &["other", "12345"]);
        assert_eq!(
            v.validate_websocket("/twilio/relay/c2", Some(&signature)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v.validate_websocket("/twilio/relay/c1", None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            v.validate_websocket("/twilio/relay/c1", Some(&signature)),
            Ok(())
        );
    }

    #[test]
    fn an_upgrade_signed_over_the_https_url_is_refused() {
        // The scheme-mismatch pitfall: what a framework behind a TLS proxy would sign.
        let https_signed = sign_request("12345", "https://hotline.example/twilio/relay/c1", &[]);
        assert_eq!(
            validator("https://hotline.example", &["12345"])
                .validate_websocket("/twilio/relay/c1", Some(&https_signed)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_query_string_is_signed_as_pairs_and_the_full_url_is_accepted_too() {
        let url = "wss://hotline.example/twilio/relay/c1?tenant=42&name=a%20b";
        let split = relay_signature(url);
        assert_eq!(
            split,
            sign(
                "12345",
                "wss://hotline.example/twilio/relay/c1namea btenant42"
            )
        );
        let v = validator("https://hotline.example", &["12345"]);
        let path = "/twilio/relay/c1?tenant=42&name=a%20b";
        assert_eq!(v.validate_websocket(path, Some(&split)), Ok(()));
        // The pairs are parameters, so their order in the query does not matter.
        assert_eq!(
            v.validate_websocket("/twilio/relay/c1?name=a%20b&tenant=42", Some(&split)),
            Ok(())
        );
        let full = sign("12345", url);
        assert_ne!(full, split, "the two conventions differ");
        assert_eq!(v.validate_websocket(path, Some(&full)), Ok(()));
        assert_eq!(
            v.validate_websocket("/twilio/relay/c1?tenant=43&name=a%20b", Some(&split)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v.validate_websocket("/twilio/relay/c1", Some(&split)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_default_port_of_a_socket_is_tried_both_ways() {
        let signature = relay_signature("wss://hotline.example/twilio/relay/c1");
        assert_eq!(
            validator("https://hotline.example:443", &["12345"])
                .validate_websocket("/twilio/relay/c1", Some(&signature)),
            Ok(())
        );
        let with_port = relay_signature("wss://hotline.example:443/twilio/relay/c1");
        assert_eq!(
            validator("https://hotline.example", &["12345"])
                .validate_websocket("/twilio/relay/c1", Some(&with_port)),
            Ok(())
        );
        let other_port = relay_signature("wss://hotline.example:8443/twilio/relay/c1");
        assert_eq!(
            validator("https://hotline.example", &["12345"])
                .validate_websocket("/twilio/relay/c1", Some(&other_port)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_socket_signature_is_the_webhook_algorithm_over_the_split_url() {
        // The twilio-python vector's URL as a socket: its query becomes the signed pairs.
        assert_eq!(
            sign_websocket("12345", "wss://mycompany.com/myapp.php?foo=1&bar=2"),
            sign_request(
                "12345",
                "wss://mycompany.com/myapp.php",
                &pairs(&[("foo", "1"), ("bar", "2")])
            )
        );
        assert_eq!(
            sign_websocket("12345", "wss://mycompany.com/myapp.php?foo=1&bar=2"),
            sign("12345", "wss://mycompany.com/myapp.phpbar2foo1")
        );
    }

    #[test]
    fn ports_are_found_by_string_surgery() {
        assert_eq!(
            remove_port("https://u:p@h.example:8443/a?b=:1").as_deref(),
            Some("https://u:p@h.example/a?b=:1")
        );
        assert_eq!(
            add_port("http://h.example/a").as_deref(),
            Some("http://h.example:80/a")
        );
        assert_eq!(
            add_port("https://[::1]/a").as_deref(),
            Some("https://[::1]:443/a")
        );
        assert_eq!(
            remove_port("https://[::1]:8443?x").as_deref(),
            Some("https://[::1]?x")
        );
    }
}
