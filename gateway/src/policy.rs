//! Bucket policies: the policy language's statements (Allow or Deny of actions on resources
//! to principals, under conditions), parsed once when set and evaluated per request. Pure.
//! See docs/gateway.md, "Access control".

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

/// A parsed bucket policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Clone, Debug, PartialEq)]
struct Statement {
    allow: bool,
    principal: Matcher<Principal>,
    action: Matcher<String>,
    resource: Matcher<String>,
    conditions: Vec<Condition>,
}

/// A list of patterns, or a list the request must not match (`NotAction`, ...).
#[derive(Clone, Debug, PartialEq)]
struct Matcher<T> {
    patterns: Vec<T>,
    negated: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Principal {
    /// `"*"`: anyone, anonymous requests included.
    Anyone,
    /// One user, by name.
    User(String),
}

#[derive(Clone, Debug, PartialEq)]
struct Condition {
    operator: Operator,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    Bool,
    IpAddress,
    NotIpAddress,
    Null,
}

impl Operator {
    fn parse(name: &str) -> Option<Operator> {
        use Operator::*;
        Some(match name {
            "StringEquals" => StringEquals,
            "StringNotEquals" => StringNotEquals,
            "StringEqualsIgnoreCase" => StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => StringNotEqualsIgnoreCase,
            "StringLike" => StringLike,
            "StringNotLike" => StringNotLike,
            "NumericEquals" => NumericEquals,
            "NumericNotEquals" => NumericNotEquals,
            "NumericLessThan" => NumericLessThan,
            "NumericLessThanEquals" => NumericLessThanEquals,
            "NumericGreaterThan" => NumericGreaterThan,
            "NumericGreaterThanEquals" => NumericGreaterThanEquals,
            "Bool" => Bool,
            "IpAddress" => IpAddress,
            "NotIpAddress" => NotIpAddress,
            "Null" => Null,
            _ => return None,
        })
    }

    /// Whether the operator is a negation (it holds when the key is absent).
    fn negative(self) -> bool {
        use Operator::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | NumericNotEquals
                | NotIpAddress
        )
    }
}

/// What a policy is asked about.
#[derive(Clone, Debug, Default)]
pub struct Request<'a> {
    /// The signed-in user (`None`: anonymous).
    pub principal: Option<&'a str>,
    /// The action, as `s3:GetObject`.
    pub action: &'a str,
    /// The resource, as `arn:aws:s3:::bucket/key`.
    pub resource: String,
    /// The condition keys the request has (`aws:SourceIp`, `s3:prefix`, ...), by lower-case
    /// name.
    pub context: BTreeMap<String, String>,
}

/// A policy's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A statement allows the request and none denies it.
    Allow,
    /// A statement denies it.
    Deny,
}

/// Why a policy document was refused (S3's `MalformedPolicy` with this message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

fn malformed<T>(message: impl Into<String>) -> Result<T, Malformed> {
    Err(Malformed(message.into()))
}

/// Strings of a value that may be one string or a list of them.
fn strings(value: &Value, what: &str) -> Result<Vec<String>, Malformed> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Number(n) => Ok(n.to_string()),
                _ => malformed(format!("{what} must be strings")),
            })
            .collect(),
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Number(n) => Ok(vec![n.to_string()]),
        _ => malformed(format!("{what} must be a string or a list of strings")),
    }
}

/// The user an `AWS` principal names: a bare name, `arn:aws:iam::NAME:root` or
/// `arn:aws:iam::ACCOUNT:user/NAME`.
fn principal_of(text: &str) -> Principal {
    if text == "*" {
        return Principal::Anyone;
    }
    if let Some(rest) = text.strip_prefix("arn:aws:iam::") {
        if let Some((account, what)) = rest.split_once(':') {
            if what == "root" {
                return Principal::User(account.to_owned());
            }
            if let Some(name) = what.strip_prefix("user/") {
                return Principal::User(name.rsplit('/').next().unwrap_or(name).to_owned());
            }
        }
    }
    Principal::User(text.to_owned())
}

fn principals(value: &Value) -> Result<Vec<Principal>, Malformed> {
    match value {
        Value::String(s) if s == "*" => Ok(vec![Principal::Anyone]),
        Value::Object(map) => {
            let mut out = Vec::new();
            for (kind, names) in map {
                match kind.as_str() {
                    "AWS" | "CanonicalUser" => out.extend(
                        strings(names, "principals")?
                            .iter()
                            .map(|n| principal_of(n)),
                    ),
                    other => return malformed(format!("Unknown principal type {other}")),
                }
            }
            if out.is_empty() {
                return malformed("A principal names someone");
            }
            Ok(out)
        }
        _ => malformed("Invalid principal in policy"),
    }
}

impl Policy {
    /// Parses `text` as the policy of bucket `bucket`: JSON, a known version, statements with
    /// an effect, a principal, actions and resources of this bucket, and known condition
    /// operators.
    pub fn parse(text: &str, bucket: &str) -> Result<Policy, Malformed> {
        let document: Value = serde_json::from_str(text)
            .or_else(|_| malformed("Policies must be valid JSON and the first byte must be '{'"))?;
        let Value::Object(document) = document else {
            return malformed("Policies must be valid JSON and the first byte must be '{'");
        };
        if let Some(version) = document.get("Version") {
            if version != "2012-10-17" && version != "2008-10-17" {
                return malformed("Invalid policy version");
            }
        }
        let statements = match document.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list.clone(),
            Some(one @ Value::Object(_)) => vec![one.clone()],
            _ => return malformed("Missing required field Statement"),
        };
        let statements = statements
            .iter()
            .map(|s| Statement::parse(s, bucket))
            .collect::<Result<_, _>>()?;
        Ok(Policy { statements })
    }

    /// Deny if a statement denies `request`; else Allow if one allows it; else nothing.
    pub fn evaluate(&self, request: &Request) -> Option<Effect> {
        let mut answer = None;
        for statement in &self.statements {
            if statement.applies(request) {
                if !statement.allow {
                    return Some(Effect::Deny);
                }
                answer = Some(Effect::Allow);
            }
        }
        answer
    }

    /// Whether it is public as S3 judges it: a statement allows anyone (`*`) without a
    /// condition that fixes who may come (a source address, a user).
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(|s| {
            s.allow
                && !s.principal.negated
                && s.principal.patterns.contains(&Principal::Anyone)
                && !s.conditions.iter().any(|c| {
                    matches!(
                        c.key.as_str(),
                        "aws:sourceip" | "aws:username" | "aws:userid" | "aws:principalaccount"
                    ) && !c.operator.negative()
                })
        })
    }
}

impl Statement {
    fn parse(value: &Value, bucket: &str) -> Result<Statement, Malformed> {
        let Value::Object(map) = value else {
            return malformed("A statement is an object");
        };
        let allow = match map.get("Effect").and_then(Value::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => return malformed("Invalid effect"),
        };
        let either = |name: &str, not: &str| -> Result<(Value, bool), Malformed> {
            match (map.get(name), map.get(not)) {
                (Some(v), None) => Ok((v.clone(), false)),
                (None, Some(v)) => Ok((v.clone(), true)),
                (Some(_), Some(_)) => malformed(format!("A statement names {name} or {not}")),
                (None, None) => malformed(format!("Missing required field {name}")),
            }
        };
        let (principal, principal_negated) = either("Principal", "NotPrincipal")?;
        let (action, action_negated) = either("Action", "NotAction")?;
        let (resource, resource_negated) = either("Resource", "NotResource")?;
        let actions = strings(&action, "actions")?;
        if let Some(bad) = actions
            .iter()
            .find(|a| *a != "*" && !a.to_ascii_lowercase().starts_with("s3:"))
        {
            return malformed(format!("Policy has an invalid action: {bad}"));
        }
        let resources = strings(&resource, "resources")?;
        for r in &resources {
            let Some(rest) = r.strip_prefix("arn:aws:s3:::") else {
                return malformed("Policy has invalid resource");
            };
            let name = rest.split('/').next().unwrap_or("");
            if !wildcard_match(name, bucket, false) {
                return malformed("Policy has invalid resource");
            }
        }
        let mut conditions = Vec::new();
        if let Some(block) = map.get("Condition") {
            let Value::Object(block) = block else {
                return malformed("Invalid Condition block");
            };
            for (name, keys) in block {
                let name = name
                    .strip_prefix("ForAnyValue:")
                    .or_else(|| name.strip_prefix("ForAllValues:"))
                    .unwrap_or(name);
                let (base, if_exists) = match name.strip_suffix("IfExists") {
                    Some(base) => (base, true),
                    None => (name, false),
                };
                let operator = Operator::parse(base)
                    .ok_or_else(|| Malformed(format!("Invalid Condition type : {name}")))?;
                let Value::Object(keys) = keys else {
                    return malformed("Invalid Condition block");
                };
                for (key, values) in keys {
                    let values = strings(values, "condition values")?;
                    if matches!(operator, Operator::IpAddress | Operator::NotIpAddress)
                        && values.iter().any(|v| parse_cidr(v).is_none())
                    {
                        return malformed("Invalid IP address in condition");
                    }
                    conditions.push(Condition {
                        operator,
                        if_exists,
                        key: key.to_ascii_lowercase(),
                        values,
                    });
                }
            }
        }
        Ok(Statement {
            allow,
            principal: Matcher {
                patterns: principals(&principal)?,
                negated: principal_negated,
            },
            action: Matcher {
                patterns: actions,
                negated: action_negated,
            },
            resource: Matcher {
                patterns: resources,
                negated: resource_negated,
            },
            conditions,
        })
    }

    fn applies(&self, request: &Request) -> bool {
        let principal = self.principal.patterns.iter().any(|p| match p {
            Principal::Anyone => true,
            Principal::User(name) => request.principal == Some(name.as_str()),
        }) != self.principal.negated;
        let action = self
            .action
            .patterns
            .iter()
            .any(|p| wildcard_match(p, request.action, true))
            != self.action.negated;
        let resource = self
            .resource
            .patterns
            .iter()
            .any(|p| wildcard_match(p, &request.resource, false))
            != self.resource.negated;
        principal && action && resource && self.conditions.iter().all(|c| c.holds(&request.context))
    }
}

impl Condition {
    fn holds(&self, context: &BTreeMap<String, String>) -> bool {
        use Operator::*;
        let Some(actual) = context.get(&self.key) else {
            return match self.operator {
                Null => self.values.iter().any(|v| v == "true"),
                _ => self.if_exists || self.operator.negative(),
            };
        };
        let any = |f: &dyn Fn(&str) -> bool| self.values.iter().any(|v| f(v));
        let number = |v: &str| v.parse::<f64>().ok();
        let compare = |f: fn(f64, f64) -> bool| match number(actual) {
            Some(a) => any(&|v| number(v).is_some_and(|b| f(a, b))),
            None => false,
        };
        match self.operator {
            StringEquals => any(&|v| v == actual),
            StringNotEquals => !any(&|v| v == actual),
            StringEqualsIgnoreCase => any(&|v| v.eq_ignore_ascii_case(actual)),
            StringNotEqualsIgnoreCase => !any(&|v| v.eq_ignore_ascii_case(actual)),
            StringLike => any(&|v| wildcard_match(v, actual, false)),
            StringNotLike => !any(&|v| wildcard_match(v, actual, false)),
            NumericEquals => compare(|a, b| a == b),
            NumericNotEquals => !compare(|a, b| a == b),
            NumericLessThan => compare(|a, b| a < b),
            NumericLessThanEquals => compare(|a, b| a <= b),
            NumericGreaterThan => compare(|a, b| a > b),
            NumericGreaterThanEquals => compare(|a, b| a >= b),
            Bool => any(&|v| v.eq_ignore_ascii_case(actual)),
            IpAddress | NotIpAddress => {
                let inside = actual
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| any(&|v| parse_cidr(v).is_some_and(|c| in_cidr(ip, c))));
                inside == (self.operator == IpAddress)
            }
            Null => any(&|v| v == "false"),
        }
    }
}

fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let address: IpAddr = address.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((address, bits))
}

fn in_cidr(ip: IpAddr, (network, bits): (IpAddr, u8)) -> bool {
    let (a, n, width) = match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a) as u128, u32::from(n) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (n >> shift)
}

/// Whether `text` matches `pattern`, where `*` stands for any characters and `?` for one.
pub fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = if ignore_case {
        (
            pattern.to_ascii_lowercase().chars().collect(),
            text.to_ascii_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), text.chars().collect())
    };
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(principal: Option<&'a str>, action: &'a str, resource: &str) -> Request<'a> {
        Request {
            principal,
            action,
            resource: resource.to_owned(),
            context: BTreeMap::from([("aws:sourceip".to_owned(), "127.0.0.1".to_owned())]),
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("s3:Get*", "s3:GetObject", true));
        assert!(wildcard_match("S3:get*", "s3:GetObject", true));
        assert!(!wildcard_match("s3:Get*", "s3:PutObject", true));
        assert!(wildcard_match(
            "arn:aws:s3:::b/*",
            "arn:aws:s3:::b/a/b",
            false
        ));
        assert!(!wildcard_match("arn:aws:s3:::b/*", "arn:aws:s3:::b", false));
        assert!(wildcard_match("a?c*", "abcdef", false));
        assert!(wildcard_match("*", "", false));
    }

    #[test]
    fn deny_beats_allow_and_principals_match_users() {
        let text = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"},
            {"Effect":"Deny","Principal":{"AWS":["arn:aws:iam::bob:root"]},"Action":"s3:*",
             "Resource":["arn:aws:s3:::b","arn:aws:s3:::b/secret/*"]}]}"#;
        let policy = Policy::parse(text, "b").unwrap();
        let get = |who, key: &str| {
            policy.evaluate(&request(
                who,
                "s3:GetObject",
                &format!("arn:aws:s3:::b/{key}"),
            ))
        };
        assert_eq!(get(None, "k"), Some(Effect::Allow));
        assert_eq!(get(Some("carol"), "k"), Some(Effect::Allow));
        assert_eq!(get(Some("bob"), "k"), Some(Effect::Allow));
        assert_eq!(get(Some("bob"), "secret/k"), Some(Effect::Deny));
        assert_eq!(
            policy.evaluate(&request(None, "s3:PutObject", "arn:aws:s3:::b/k")),
            None
        );
        assert!(policy.is_public());
    }

    #[test]
    fn conditions() {
        let text = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"s3:ListBucket",
            "Resource":"arn:aws:s3:::b","Condition":{"StringLike":{"s3:prefix":"home/*"},
            "IpAddress":{"aws:SourceIp":"127.0.0.0/8"}}}]}"#;
        let policy = Policy::parse(text, "b").unwrap();
        assert!(!policy.is_public());
        let mut list = request(Some("x"), "s3:ListBucket", "arn:aws:s3:::b");
        assert_eq!(policy.evaluate(&list), None);
        list.context.insert("s3:prefix".into(), "home/x".into());
        assert_eq!(policy.evaluate(&list), Some(Effect::Allow));
        list.context
            .insert("aws:sourceip".into(), "10.0.0.1".into());
        assert_eq!(policy.evaluate(&list), None);
        let text = r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*",
            "Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#;
        let policy = Policy::parse(text, "b").unwrap();
        let mut get = request(None, "s3:GetObject", "arn:aws:s3:::b/k");
        get.context
            .insert("aws:securetransport".into(), "false".into());
        assert_eq!(policy.evaluate(&get), Some(Effect::Deny));
        let text = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b",
            "Condition":{"NumericLessThanEquals":{"s3:max-keys":"10"}}}]}"#;
        let policy = Policy::parse(text, "b").unwrap();
        let mut list = request(None, "s3:ListBucket", "arn:aws:s3:::b");
        list.context.insert("s3:max-keys".into(), "5".into());
        assert_eq!(policy.evaluate(&list), Some(Effect::Allow));
        list.context.insert("s3:max-keys".into(), "50".into());
        assert_eq!(policy.evaluate(&list), None);
    }

    #[test]
    fn malformed_documents_are_refused() {
        for text in [
            "not json",
            "[]",
            r#"{"Version":"2001-01-01","Statement":[]}"#,
            r#"{"Statement":[]}"#,
            r#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::other/*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ec2:*","Resource":"arn:aws:s3:::b"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b","Condition":{"Sometimes":{"a":"b"}}}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b","Condition":{"IpAddress":{"aws:SourceIp":"300.1.1.1"}}}]}"#,
        ] {
            assert!(Policy::parse(text, "b").is_err(), "{text}");
        }
    }
}
