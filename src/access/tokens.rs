//! Tokens: the static ones from the configuration, and signed ones (JWT) an app's backend mints.
//!
//! A presented bearer value with the JWT shape (three base64url parts, the first a JSON header)
//! is verified as a signed token: HS256 with the shared secret, or EdDSA / RS256 with a public key
//! from the JWKS file. `exp` is required; `exp` and `nbf` are enforced with [`LEEWAY_SECS`] of
//! clock skew; `aud` and `iss` are checked when configured. `alg: none` and every algorithm not
//! listed are refused. Anything else is compared, in constant time, with the static tokens.
//!
//! The JWKS file is re-read at most once a second when tokens arrive (and at once on
//! [`Verifier::reload`], which the server calls on SIGHUP), so keys rotate without a restart: a
//! key added is accepted from the next second, a key removed is refused from then on. Verified
//! tokens are kept (up to [`CACHE_TOKENS`], for at most [`CACHE_SECS`], and never past their own
//! `exp`) so a client's every request does not pay a signature check; a key change empties that.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::{Access, AccessError, Grant, ScopeRule, Scopes};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Verified tokens kept (when full, the cache starts over).
pub const CACHE_TOKENS: usize = 100_000;
/// Longest a verified token is kept without checking its signature again.
pub const CACHE_SECS: u64 = 300;
/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash's size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether a bearer value looks like a JWT (and is to be verified as one).
pub fn is_jwt(token: &str) -> bool {
    token.starts_with("eyJ")
        && token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where the signing keys come from.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    pub secret_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

impl KeySources {
    pub fn any(&self) -> bool {
        self.secret_file.is_some() || self.jwks_file.is_some()
    }
}

/// Reads an HS256 secret file (surrounding whitespace trimmed).
pub fn read_secret(path: &Path) -> Result<Vec<u8>, AccessError> {
    let raw = std::fs::read(path)
        .map_err(|e| AccessError::Keys(format!("cannot read {}: {e}", path.display())))?;
    let secret = raw.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AccessError::Keys(format!(
            "{}: an HS256 secret needs at least {MIN_SECRET_BYTES} bytes (has {})",
            path.display(),
            secret.len()
        )));
    }
    Ok(secret)
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Parses a JWKS document into verification keys; a key of a kind Concord does not accept is an
/// error, not silently skipped.
fn parse_jwks(bytes: &[u8], path: &Path) -> Result<Vec<Key>, AccessError> {
    let bad = |m: String| AccessError::Keys(format!("{}: {m}", path.display()));
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| bad(format!("not a JWKS: {e}")))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::OctetKeyPair(_), None | Some(KeyAlgorithm::EdDSA)) => {
                Algorithm::EdDSA
            }
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (_, a) => {
                return Err(bad(format!(
                    "key {i}: only Ed25519 (EdDSA) and RSA (RS256) public keys are accepted, not {:?} {a:?}",
                    std::mem::discriminant(&jwk.algorithm)
                )))
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {i}: {e}")))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    Ok(keys)
}

struct Jwks {
    path: PathBuf,
    bytes: Vec<u8>,
    keys: Vec<Key>,
    checked: Instant,
}

/// A token verified: its grant, and the window it is valid in.
#[derive(Clone)]
struct Verified {
    grant: Arc<Grant>,
    exp: u64,
    nbf: Option<u64>,
    verified_at: Instant,
}

/// Verifies signed tokens and turns their claims into grants.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<RwLock<Jwks>>,
    reload_lock: Mutex<()>,
    audience: Option<String>,
    issuer: Option<String>,
    cache: RwLock<HashMap<String, Arc<Verified>, TokenHasher>>,
}

/// Hashes cached tokens with xxh3: they are long (hundreds of bytes) and hashed on every
/// request. Only verified tokens are inserted, so nobody can fill the map with chosen keys.
#[derive(Clone, Default)]
struct TokenHasher;

impl std::hash::BuildHasher for TokenHasher {
    type Hasher = xxhash_rust::xxh3::Xxh3Default;
    fn build_hasher(&self) -> Self::Hasher {
        xxhash_rust::xxh3::Xxh3Default::new()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Verifier {
    /// Loads the keys; fails (at start) on a missing or unusable key file.
    pub fn new(sources: &KeySources) -> Result<Verifier, AccessError> {
        let secret = match &sources.secret_file {
            Some(p) => Some(DecodingKey::from_secret(&read_secret(p)?)),
            None => None,
        };
        let jwks = match &sources.jwks_file {
            Some(p) => {
                let bytes = std::fs::read(p)
                    .map_err(|e| AccessError::Keys(format!("cannot read {}: {e}", p.display())))?;
                let keys = parse_jwks(&bytes, p)?;
                Some(RwLock::new(Jwks {
                    path: p.clone(),
                    bytes,
                    keys,
                    checked: Instant::now(),
                }))
            }
            None => None,
        };
        Ok(Verifier {
            secret,
            jwks,
            reload_lock: Mutex::new(()),
            audience: sources.audience.clone(),
            issuer: sources.issuer.clone(),
            cache: RwLock::new(HashMap::with_hasher(TokenHasher)),
        })
    }

    /// Re-reads the JWKS file now. A file that cannot be read or parsed keeps the keys in use
    /// (a half-written file during a rotation must not lock every client out) and is reported.
    pub fn reload(&self) -> Result<bool, AccessError> {
        let Some(jwks) = &self.jwks else {
            return Ok(false);
        };
        let _one = self.reload_lock.lock();
        let path = jwks.read().path.clone();
        jwks.write().checked = Instant::now();
        let bytes = std::fs::read(&path)
            .map_err(|e| AccessError::Keys(format!("cannot read {}: {e}", path.display())))?;
        if bytes == jwks.read().bytes {
            return Ok(false);
        }
        let keys = parse_jwks(&bytes, &path)?;
        {
            let mut j = jwks.write();
            j.bytes = bytes;
            j.keys = keys;
        }
        // A token verified with a key now gone must not live on in the cache.
        self.cache.write().clear();
        tracing::info!(file = %path.display(), "JWKS reloaded");
        Ok(true)
    }

    fn maybe_reload(&self) {
        let due = self
            .jwks
            .as_ref()
            .is_some_and(|j| j.read().checked.elapsed() >= Duration::from_secs(1));
        if due {
            if let Err(e) = self.reload() {
                tracing::warn!(error = %e, "JWKS not reloaded; the keys in use stay");
            }
        }
    }

    /// Verifies `token` and returns what it grants.
    pub fn verify(&self, token: &str) -> Result<Arc<Grant>, AccessError> {
        self.maybe_reload();
        let t = now();
        // A read lock and a hash: what every request with a known token pays (a cache with an
        // eviction policy cost a visible share of a `GET`).
        let cached = self.cache.read().get(token).cloned();
        if let Some(v) = cached {
            if v.verified_at.elapsed() < Duration::from_secs(CACHE_SECS) {
                return window(&v, t).map(|()| v.grant.clone());
            }
        }
        let v = self.verify_uncached(token)?;
        window(&v, t)?;
        let grant = v.grant.clone();
        let mut cache = self.cache.write();
        if cache.len() >= CACHE_TOKENS {
            // Full: start over (tokens still in use are verified again, once each).
            cache.clear();
        }
        cache.insert(token.to_string(), Arc::new(v));
        Ok(grant)
    }

    fn verify_uncached(&self, token: &str) -> Result<Verified, AccessError> {
        let invalid = |m: String| AccessError::InvalidToken(m);
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = self.audience.is_some();
        if let Some(a) = &self.audience {
            validation.set_audience(&[a]);
        }
        if let Some(i) = &self.issuer {
            validation.set_issuer(&[i]);
        }
        let decoded = match header.alg {
            Algorithm::HS256 => {
                let key = self.secret.as_ref().ok_or_else(|| {
                    invalid("HS256 tokens are not accepted: no --jwt-secret-file".into())
                })?;
                jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            }
            Algorithm::EdDSA | Algorithm::RS256 => {
                let jwks = self.jwks.as_ref().ok_or_else(|| {
                    invalid(format!(
                        "{:?} tokens are not accepted: no --jwks-file",
                        header.alg
                    ))
                })?;
                let jwks = jwks.read();
                let mut candidates = jwks.keys.iter().filter(|k| {
                    k.alg == header.alg
                        && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
                });
                let mut last = None;
                let found = loop {
                    let Some(k) = candidates.next() else {
                        break last.unwrap_or_else(|| {
                            Err(jsonwebtoken::errors::ErrorKind::InvalidSignature.into())
                        });
                    };
                    match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                        Err(e)
                            if matches!(
                                e.kind(),
                                jsonwebtoken::errors::ErrorKind::InvalidSignature
                            ) =>
                        {
                            last = Some(Err(e));
                        }
                        other => break other,
                    }
                };
                found
            }
            other => return Err(invalid(format!("algorithm {other:?} is not accepted"))),
        };
        let claims = decoded.map_err(|e| invalid(e.to_string()))?.claims;
        grant_of(claims)
    }
}

/// Whether a verified token is inside its validity window now (it may have been cached before
/// it expired).
fn window(v: &Verified, t: u64) -> Result<(), AccessError> {
    if t > v.exp.saturating_add(LEEWAY_SECS) {
        return Err(AccessError::InvalidToken("ExpiredSignature".into()));
    }
    if v.nbf.is_some_and(|n| n > t.saturating_add(LEEWAY_SECS)) {
        return Err(AccessError::InvalidToken("ImmatureSignature".into()));
    }
    Ok(())
}

/// The grant a verified token's claims describe.
fn grant_of(claims: Map<String, Value>) -> Result<Verified, AccessError> {
    let invalid = |m: &str| AccessError::InvalidToken(m.to_string());
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid("the token has no `sub` claim")),
    };
    let access = match claims.get("access") {
        None => Access::Read,
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| invalid("`access` must be \"read\", \"write\" or \"admin\""))?,
    };
    let scopes = match claims.get("scopes") {
        None => None,
        Some(v) => {
            let rules: Vec<ScopeRule> = serde_json::from_value(v.clone())
                .map_err(|e| AccessError::InvalidToken(format!("`scopes`: {e}")))?;
            Some(Arc::new(Scopes::bind(&rules, &claims)?))
        }
    };
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    let nbf = claims.get("nbf").and_then(Value::as_u64);
    Ok(Verified {
        grant: Arc::new(Grant {
            name: sub,
            access,
            collections: None,
            scopes,
            expires: Some(exp.saturating_add(LEEWAY_SECS)),
        }),
        exp,
        nbf,
        verified_at: Instant::now(),
    })
}

/// One static token from the configuration, its scopes bound to its name (`$sub`).
pub struct StaticToken {
    token: String,
    grant: Arc<Grant>,
}

impl StaticToken {
    pub fn new(
        name: &str,
        token: &str,
        access: Access,
        collections: Option<Vec<String>>,
        scopes: Option<&[ScopeRule]>,
    ) -> Result<StaticToken, AccessError> {
        let scopes = match scopes {
            None => None,
            Some(rules) => {
                let mut claims = Map::new();
                claims.insert("sub".into(), Value::String(name.to_string()));
                Some(Arc::new(Scopes::bind(rules, &claims)?))
            }
        };
        Ok(StaticToken {
            token: token.to_string(),
            grant: Arc::new(Grant {
                name: name.to_string(),
                access,
                collections,
                scopes,
                expires: None,
            }),
        })
    }
}

/// Everything that turns a presented bearer value into a grant.
pub struct Authenticator {
    statics: Vec<StaticToken>,
    verifier: Option<Verifier>,
}

impl Authenticator {
    pub fn new(statics: Vec<StaticToken>, verifier: Option<Verifier>) -> Authenticator {
        Authenticator { statics, verifier }
    }

    /// Whether any token is configured (without, the node serves loopback clients only).
    pub fn any(&self) -> bool {
        !self.statics.is_empty() || self.verifier.is_some()
    }

    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    /// The grant of a presented bearer value.
    pub fn authenticate(&self, given: &str) -> Result<Arc<Grant>, AccessError> {
        if is_jwt(given) {
            if let Some(v) = &self.verifier {
                return v.verify(given);
            }
        }
        // Compared with every token, so timing does not tell which one nearly matched.
        let mut found = None;
        for t in &self.statics {
            if bool::from(t.token.as_bytes().ct_eq(given.as_bytes())) {
                found = Some(&t.grant);
            }
        }
        found
            .cloned()
            .ok_or_else(|| AccessError::InvalidToken("unknown API token".into()))
    }
}

/// Signs claims with an HS256 secret (`concord token`, tests, examples).
pub fn mint_hs256(secret: &[u8], claims: &Value) -> Result<String, AccessError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AccessError::Keys(format!("cannot sign: {e}")))
}

/// Claims for a token valid `ttl` from now.
pub fn claims(
    sub: &str,
    access: Access,
    scopes: Option<&[ScopeRule]>,
    ttl: Duration,
    audience: Option<&str>,
    issuer: Option<&str>,
) -> Value {
    let t = now();
    let mut c = serde_json::json!({
        "sub": sub,
        "access": access,
        "iat": t,
        "exp": t + ttl.as_secs(),
    });
    if let Some(s) = scopes {
        c["scopes"] = serde_json::json!(s);
    }
    if let Some(a) = audience {
        c["aud"] = Value::String(a.into());
    }
    if let Some(i) = issuer {
        c["iss"] = Value::String(i.into());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier(dir: &Path, aud: Option<&str>) -> Verifier {
        let p = dir.join("secret");
        std::fs::write(&p, SECRET).unwrap();
        Verifier::new(&KeySources {
            secret_file: Some(p),
            jwks_file: None,
            audience: aud.map(String::from),
            issuer: None,
        })
        .unwrap()
    }

    #[test]
    fn signed_tokens_grant_what_their_claims_say() {
        let dir = tempfile::tempdir().unwrap();
        let v = verifier(dir.path(), None);
        let rules = [ScopeRule::parse_arg(r#"notes:{"owner":"$sub"}"#).unwrap()];
        let c = claims(
            "alice",
            Access::Write,
            Some(&rules),
            Duration::from_secs(60),
            None,
            None,
        );
        let t = mint_hs256(SECRET, &c).unwrap();
        assert!(is_jwt(&t));
        let g = v.verify(&t).unwrap();
        assert_eq!(g.name, "alice");
        assert_eq!(g.access, Access::Write);
        assert!(g.sees("notes", "x", &json!({"owner": "alice"})));
        assert!(!g.sees("notes", "x", &json!({"owner": "bob"})));
        // Cached: the same answer again.
        assert_eq!(v.verify(&t).unwrap().name, "alice");
    }

    #[test]
    fn bad_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = verifier(dir.path(), Some("concord"));
        let ok = |c: &Value| mint_hs256(SECRET, c).unwrap();
        let t = now();
        let base = json!({"sub": "a", "aud": "concord", "exp": t + 60});
        assert!(v.verify(&ok(&base)).is_ok());
        let mut expired = base.clone();
        expired["exp"] = json!(t - 3600);
        assert!(v.verify(&ok(&expired)).is_err());
        let mut early = base.clone();
        early["nbf"] = json!(t + 3600);
        assert!(v.verify(&ok(&early)).is_err());
        let mut aud = base.clone();
        aud["aud"] = json!("someone-else");
        assert!(v.verify(&ok(&aud)).is_err());
        let mut no_exp = base.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(v.verify(&ok(&no_exp)).is_err());
        let wrong = mint_hs256(b"another secret, also 32 bytes long!!", &base).unwrap();
        assert!(v.verify(&wrong).is_err());
        // alg none: header {"alg":"none"} with the same claims and no signature.
        use base64::Engine;
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&base)
        );
        assert!(v.verify(&none).is_err());
        let mut bad_access = base.clone();
        bad_access["access"] = json!("root");
        assert!(v.verify(&ok(&bad_access)).is_err());
    }

    /// An Ed25519 key pair from a seed: the JWK of its public half, and a token it signs.
    fn ed_key(seed: u8, kid: &str) -> (Value, impl Fn(&Value) -> String) {
        use base64::Engine;
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let x =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"});
        let der = sk.to_pkcs8_der().unwrap().as_bytes().to_vec();
        let kid = kid.to_string();
        let sign = move |c: &Value| {
            let mut h = Header::new(Algorithm::EdDSA);
            h.kid = Some(kid.clone());
            jsonwebtoken::encode(&h, c, &EncodingKey::from_ed_der(&der)).unwrap()
        };
        (jwk, sign)
    }

    #[test]
    fn jwks_keys_rotate_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (k1, sign1) = ed_key(1, "one");
        let (k2, sign2) = ed_key(2, "two");
        std::fs::write(&path, json!({"keys": [k1]}).to_string()).unwrap();
        let v = Verifier::new(&KeySources {
            jwks_file: Some(path.clone()),
            ..KeySources::default()
        })
        .unwrap();
        let c = json!({"sub": "a", "exp": now() + 600});
        let (t1, t2) = (sign1(&c), sign2(&c));
        assert!(v.verify(&t1).is_ok());
        assert!(v.verify(&t2).is_err(), "key two is not published yet");
        // HS256 is not accepted without a secret, even with a valid-looking token.
        assert!(v.verify(&mint_hs256(SECRET, &c).unwrap()).is_err());
        // Rotate: key two in, key one out. Noticed on its own within a second or two...
        std::fs::write(&path, json!({"keys": [k2]}).to_string()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while v.verify(&t2).is_err() {
            assert!(Instant::now() < deadline, "the new key was never picked up");
            std::thread::sleep(Duration::from_millis(20));
        }
        // ...and the old key's token is refused, although it was verified (and cached) before.
        assert!(v.verify(&t1).is_err());
        // A broken file keeps the keys in use.
        std::fs::write(&path, "{ not json").unwrap();
        assert!(v.reload().is_err());
        assert!(v.verify(&t2).is_ok());
    }

    #[test]
    fn short_secrets_are_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "short\n").unwrap();
        assert!(read_secret(&p).is_err());
    }

    #[test]
    fn static_tokens_and_shapes() {
        let a = Authenticator::new(
            vec![
                StaticToken::new("ci", "static-token-0123456789", Access::Read, None, None)
                    .unwrap(),
            ],
            None,
        );
        assert_eq!(
            a.authenticate("static-token-0123456789").unwrap().name,
            "ci"
        );
        assert!(a.authenticate("static-token-012345678").is_err());
        assert!(!is_jwt("static-token-0123456789"));
        assert!(!is_jwt("eyJ.a b.c"));
    }
}
