//! Scopes: which documents of which collections a caller may see and change.
//!
//! A scope names a collection and, optionally, narrows it to the documents a selector matches
//! and/or whose id starts with a prefix. A selector may refer to the token's claims: a string
//! value `"$sub"` (or `"$team"`, any top-level claim) is replaced by that claim's value when the
//! token is verified, so one rule (`{"owner": "$sub"}`) serves every user. `"$$x"` is the literal
//! string `"$x"`. An id prefix may start with a claim (`"$sub/"`: the claim, then `/`). A caller with several scopes on one collection sees the union.
//!
//! Visibility is judged on a document's current JSON: the same selector language as `find`,
//! evaluated on what `GET` returns, so a scope is also a query an index can answer.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::AccessError;
use crate::query::selector::Selector;

/// A scope as written in a token's claims or in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    pub collection: String,
    /// Only documents this selector matches (claims bound by `"$name"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Value>,
    /// Only documents whose id starts with this (claims bound the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_prefix: Option<String>,
}

impl ScopeRule {
    /// Parses the command line's form: `COLLECTION`, `COLLECTION:SELECTOR_JSON` or
    /// `COLLECTION/ID_PREFIX`.
    pub fn parse_arg(s: &str) -> Result<ScopeRule, AccessError> {
        let bad = |m: String| AccessError::BadScope(m);
        if let Some((c, sel)) = s.split_once(':') {
            let selector: Value = serde_json::from_str(sel)
                .map_err(|e| bad(format!("the selector of `{c}` is not JSON: {e}")))?;
            return Ok(ScopeRule {
                collection: c.to_string(),
                selector: Some(selector),
                id_prefix: None,
            });
        }
        if let Some((c, prefix)) = s.split_once('/') {
            return Ok(ScopeRule {
                collection: c.to_string(),
                selector: None,
                id_prefix: Some(prefix.to_string()),
            });
        }
        Ok(ScopeRule {
            collection: s.to_string(),
            selector: None,
            id_prefix: None,
        })
    }
}

/// One scope with the claims bound: ready to judge documents.
#[derive(Debug, Clone)]
pub struct Scope {
    pub collection: String,
    /// The bound selector, as JSON (a `find` conjunct) and parsed.
    pub selector: Option<(Value, Selector)>,
    pub id_prefix: Option<String>,
}

impl Scope {
    /// Whether the scope covers its whole collection.
    pub fn is_whole(&self) -> bool {
        self.selector.is_none() && self.id_prefix.is_none()
    }

    fn admits(&self, id: &str, json: &Value) -> bool {
        self.id_prefix.as_deref().is_none_or(|p| id.starts_with(p))
            && self.selector.as_ref().is_none_or(|(_, s)| s.matches(json))
    }
}

/// The scopes of one caller, claims bound.
#[derive(Debug, Clone, Default)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Binds `rules` to `claims` and parses the selectors. A rule naming a claim the token does
    /// not carry is refused: silently matching nothing would hide a mistake in the app's minting.
    pub fn bind(rules: &[ScopeRule], claims: &Map<String, Value>) -> Result<Scopes, AccessError> {
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            if r.collection.is_empty() {
                return Err(AccessError::BadScope("a scope names no collection".into()));
            }
            let selector = match &r.selector {
                None => None,
                Some(v) => {
                    let bound = bind_value(v, claims)?;
                    if !bound.is_object() {
                        return Err(AccessError::BadScope(format!(
                            "the selector of a scope on `{}` is not an object",
                            r.collection
                        )));
                    }
                    let parsed = Selector::parse(&bound).map_err(|e| {
                        AccessError::BadScope(format!("scope on `{}`: {e}", r.collection))
                    })?;
                    Some((bound, parsed))
                }
            };
            let id_prefix = match &r.id_prefix {
                None => None,
                Some(p) => Some(bind_prefix(p, claims, &r.collection)?),
            };
            out.push(Scope {
                collection: r.collection.clone(),
                selector,
                id_prefix,
            });
        }
        Ok(Scopes(out))
    }

    fn on<'a>(&'a self, collection: &'a str) -> impl Iterator<Item = &'a Scope> + 'a {
        self.0.iter().filter(move |s| s.collection == collection)
    }

    /// Whether any scope names `collection`.
    pub fn names(&self, collection: &str) -> bool {
        self.on(collection).next().is_some()
    }

    /// Whether the caller sees all of `collection` (a scope on it with no narrowing).
    pub fn whole(&self, collection: &str) -> bool {
        self.on(collection).any(Scope::is_whole)
    }

    /// Whether the document `id` of `collection`, with this JSON, is in scope.
    pub fn admits(&self, collection: &str, id: &str, json: &Value) -> bool {
        self.on(collection).any(|s| s.admits(id, json))
    }

    /// The collections named, each once.
    pub fn collections(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.0.iter().map(|s| s.collection.as_str()).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The scopes on `collection`.
    pub fn of(&self, collection: &str) -> Vec<&Scope> {
        self.0
            .iter()
            .filter(|s| s.collection == collection)
            .collect()
    }
}

/// Binds an id prefix: a leading `$name` (letters, digits, `_`) is the claim's string value,
/// the rest is literal; `$$` is a literal `$`.
fn bind_prefix(
    p: &str,
    claims: &Map<String, Value>,
    collection: &str,
) -> Result<String, AccessError> {
    if let Some(lit) = p.strip_prefix("$$") {
        return Ok(format!("${lit}"));
    }
    let Some(rest) = p.strip_prefix('$') else {
        return Ok(p.to_string());
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (name, tail) = rest.split_at(end);
    match claims.get(name) {
        Some(Value::String(v)) if !v.is_empty() => Ok(format!("{v}{tail}")),
        Some(_) => Err(AccessError::BadScope(format!(
            "the id prefix of a scope on `{collection}` needs claim `{name}` to be a non-empty string"
        ))),
        None => Err(AccessError::BadScope(format!(
            "a scope refers to claim `{name}`, which the token does not carry"
        ))),
    }
}

/// Replaces claim references (`"$name"`) in a selector's values. Keys are left alone: they are
/// field names and operators.
fn bind_value(v: &Value, claims: &Map<String, Value>) -> Result<Value, AccessError> {
    Ok(match v {
        Value::String(s) => {
            if let Some(lit) = s.strip_prefix("$$") {
                Value::String(format!("${lit}"))
            } else if let Some(name) = s.strip_prefix('$') {
                claims.get(name).cloned().ok_or_else(|| {
                    AccessError::BadScope(format!(
                        "a scope refers to claim `{name}`, which the token does not carry"
                    ))
                })?
            } else {
                v.clone()
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| bind_value(i, claims))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), bind_value(x, claims)?)))
                .collect::<Result<_, AccessError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Map<String, Value> {
        json!({"sub": "alice", "teams": ["red", "blue"]})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    fn rule(v: Value) -> ScopeRule {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn claims_bind_into_selectors_and_prefixes() {
        let s = Scopes::bind(
            &[
                rule(json!({"collection": "notes", "selector": {"owner": "$sub"}})),
                rule(json!({"collection": "boards", "selector": {"team": {"$in": "$teams"}}})),
                rule(json!({"collection": "files", "id_prefix": "$sub/"})),
            ],
            &claims(),
        )
        .unwrap();
        assert!(s.admits("notes", "n1", &json!({"owner": "alice"})));
        assert!(!s.admits("notes", "n1", &json!({"owner": "bob"})));
        assert!(!s.admits("notes", "n1", &json!({})));
        assert!(s.admits("boards", "b", &json!({"team": "blue"})));
        assert!(!s.admits("boards", "b", &json!({"team": "green"})));
        assert!(s.admits("files", "alice/x", &json!({})));
        assert!(!s.admits("files", "bob/x", &json!({})));
        assert!(!s.admits("other", "x", &json!({"owner": "alice"})));
        assert!(!s.whole("notes"));
        assert_eq!(s.collections(), vec!["boards", "files", "notes"]);
    }

    #[test]
    fn members_arrays_and_literal_dollars() {
        let s = Scopes::bind(
            &[rule(
                json!({"collection": "b", "selector": {"members": {"$all": ["$sub"]}, "k": "$$sub"}}),
            )],
            &claims(),
        )
        .unwrap();
        assert!(s.admits("b", "x", &json!({"members": ["bob", "alice"], "k": "$sub"})));
        assert!(!s.admits("b", "x", &json!({"members": ["bob"], "k": "$sub"})));
        assert!(!s.admits("b", "x", &json!({"members": ["alice"], "k": "alice"})));
    }

    #[test]
    fn missing_claims_and_bad_selectors_are_refused() {
        let e = Scopes::bind(
            &[rule(
                json!({"collection": "n", "selector": {"org": "$org"}}),
            )],
            &claims(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`org`"), "{e}");
        let e = Scopes::bind(
            &[rule(
                json!({"collection": "n", "selector": {"a": {"$bogus": 1}}}),
            )],
            &claims(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("$bogus"), "{e}");
    }

    #[test]
    fn command_line_form() {
        assert_eq!(
            ScopeRule::parse_arg(r#"notes:{"owner":"$sub"}"#).unwrap(),
            rule(json!({"collection": "notes", "selector": {"owner": "$sub"}}))
        );
        assert_eq!(
            ScopeRule::parse_arg("files/$sub/").unwrap(),
            rule(json!({"collection": "files", "id_prefix": "$sub/"}))
        );
        assert!(ScopeRule::parse_arg("n:{oops").is_err());
    }
}
