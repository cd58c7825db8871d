//! Cross-origin requests from browsers, as S3 answers them: a bucket's CORS rules are tried
//! in order, and the first that allows the request's origin, method and (for a preflight)
//! headers says what the answer's `Access-Control-*` headers are. Pure: the HTTP shell is in
//! `lib.rs`.

use tidepool_buckets::CorsRule;

/// Whether `value` matches `pattern`, which may hold one `*` standing for any characters
/// (compared without regard to case when `fold` is set, as header names are).
fn wildcard_match(pattern: &str, value: &str, fold: bool) -> bool {
    let (pattern, value) = if fold {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.to_owned(), value.to_owned())
    };
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.starts_with(head)
                && value.ends_with(tail)
        }
    }
}

/// The first rule that allows `origin` to use `method` with request headers `headers`.
pub fn matching<'r>(
    rules: &'r [CorsRule],
    origin: &str,
    method: &str,
    headers: &[String],
) -> Option<&'r CorsRule> {
    rules.iter().find(|rule| {
        rule.allowed_origins
            .iter()
            .any(|o| wildcard_match(o, origin, false))
            && rule.allowed_methods.iter().any(|m| m == method)
            && headers.iter().all(|h| {
                rule.allowed_headers
                    .iter()
                    .any(|allowed| wildcard_match(allowed, h, true))
            })
    })
}

/// The `Access-Control-*` headers of an answer allowed by `rule`, to `origin`; a preflight
/// also names the methods and the request headers allowed.
pub fn answer_headers(
    rule: &CorsRule,
    origin: &str,
    preflight: Option<&[String]>,
) -> Vec<(&'static str, String)> {
    let any_origin = rule.allowed_origins.iter().any(|o| o == "*");
    let mut out = vec![(
        "access-control-allow-origin",
        if any_origin {
            "*".to_owned()
        } else {
            origin.to_owned()
        },
    )];
    out.push((
        "access-control-allow-methods",
        rule.allowed_methods.join(", "),
    ));
    if let Some(headers) = preflight {
        if !headers.is_empty() {
            out.push(("access-control-allow-headers", headers.join(", ")));
        }
    }
    if !rule.expose_headers.is_empty() {
        out.push((
            "access-control-expose-headers",
            rule.expose_headers.join(", "),
        ));
    }
    if let Some(age) = rule.max_age_seconds {
        out.push(("access-control-max-age", age.to_string()));
    }
    if !any_origin {
        out.push((
            "vary",
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".into(),
        ));
    }
    out
}

/// The request headers a preflight asks for (`Access-Control-Request-Headers`).
pub fn requested_headers(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            ..CorsRule::default()
        }
    }

    #[test]
    fn the_first_rule_that_allows_everything_asked_answers() {
        let rules = vec![
            rule(
                &["https://app.example.com"],
                &["PUT", "POST"],
                &["content-type", "x-amz-*"],
            ),
            rule(&["*"], &["GET"], &[]),
        ];
        let put = matching(
            &rules,
            "https://app.example.com",
            "PUT",
            &["x-amz-date".into()],
        );
        assert_eq!(put, Some(&rules[0]));
        // A header the rule does not allow.
        assert_eq!(
            matching(
                &rules,
                "https://app.example.com",
                "PUT",
                &["authorization".into()]
            ),
            None
        );
        assert_eq!(
            matching(&rules, "https://other.example", "GET", &[]),
            Some(&rules[1])
        );
        assert_eq!(matching(&rules, "https://other.example", "PUT", &[]), None);
        assert_eq!(matching(&[], "https://a", "GET", &[]), None);
        let headers = answer_headers(&rules[1], "https://other.example", Some(&[]));
        assert!(headers.contains(&("access-control-allow-origin", "*".into())));
        let headers = answer_headers(
            &rules[0],
            "https://app.example.com",
            Some(&["x-amz-date".into()]),
        );
        assert!(headers.contains(&(
            "access-control-allow-origin",
            "https://app.example.com".into()
        )));
        assert!(headers.contains(&("access-control-allow-headers", "x-amz-date".into())));
    }

    #[test]
    fn wildcards_stand_for_any_characters_once() {
        assert!(wildcard_match(
            "https://*.example.com",
            "https://a.b.example.com",
            false
        ));
        assert!(!wildcard_match(
            "https://*.example.com",
            "https://example.com",
            false
        ));
        assert!(!wildcard_match(
            "https://*.example.com",
            "http://a.example.com",
            false
        ));
        assert!(wildcard_match("X-Amz-*", "x-amz-meta-a", true));
        assert!(wildcard_match("*", "anything", false));
        assert_eq!(
            requested_headers(Some("Content-Type, X-Amz-Date ,")),
            ["content-type", "x-amz-date"]
        );
    }
}
