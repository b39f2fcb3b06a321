//! Token-signing keys of the simulated Entra ID: signing, JWKS and bearer-token verification.

use actix_web::HttpRequest;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

const SIGNING_KEY: &str = include_str!("certs/signing.key");
const SIGNING_PUB: &str = include_str!("certs/signing.pub.pem");
const SIGNING_CRT: &str = include_str!("certs/signing.crt");
const SIGNING_KID: &str = include_str!("certs/signing.kid");
const SIGNING2_KEY: &str = include_str!("certs/signing2.key");
const SIGNING2_PUB: &str = include_str!("certs/signing2.pub.pem");
const SIGNING2_CRT: &str = include_str!("certs/signing2.crt");
const SIGNING2_KID: &str = include_str!("certs/signing2.kid");

/// The kid `sign_token_with_unknown_key` puts in the header; never published in the JWKS.
pub const UNKNOWN_KID: &str = "sim-unknown-kid-not-in-jwks";

pub(crate) struct KeyPair {
    pub kid: String,
    pub enc: EncodingKey,
    pub dec: DecodingKey,
    /// Published JWK (Entra shape: kty, use, kid, x5t, n, e, x5c; no alg).
    pub n: String,
    pub e: String,
    pub x5c: String,
}

pub(crate) struct Keys {
    pub k1: KeyPair,
    pub k2: KeyPair,
}

#[derive(Debug, PartialEq)]
pub(crate) enum AuthError {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Bad signature, unknown kid, expired, malformed.
    Invalid(String),
    /// Valid token for another resource.
    WrongAudience,
}

fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect()
}

impl KeyPair {
    fn load(key: &str, public: &str, crt: &str, kid: &str) -> anyhow::Result<KeyPair> {
        let enc = EncodingKey::from_rsa_pem(key.as_bytes())?;
        let dec = DecodingKey::from_rsa_pem(public.as_bytes())?;
        let jwk = Jwk::from_encoding_key(&enc, Algorithm::RS256)?;
        let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
            anyhow::bail!("signing key is not RSA");
        };
        Ok(KeyPair {
            kid: kid.trim().to_string(),
            enc,
            dec,
            n: rsa.n,
            e: rsa.e,
            x5c: pem_body(crt),
        })
    }

    pub fn jwk(&self, tenant_id: &str) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
            "x5c": [self.x5c],
            "cloud_instance_name": "microsoftonline.com",
            "issuer": format!("https://login.microsoftonline.com/{tenant_id}/v2.0"),
        })
    }
}

impl Keys {
    pub fn load() -> anyhow::Result<Keys> {
        Ok(Keys {
            k1: KeyPair::load(SIGNING_KEY, SIGNING_PUB, SIGNING_CRT, SIGNING_KID)?,
            k2: KeyPair::load(SIGNING2_KEY, SIGNING2_PUB, SIGNING2_CRT, SIGNING2_KID)?,
        })
    }

    fn sign_with(pair: &KeyPair, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(kid.to_string());
        header.x5t = Some(kid.to_string());
        // Signing with an embedded, known-good RSA key cannot fail for JSON claims.
        jsonwebtoken::encode(&header, claims, &pair.enc).unwrap_or_default()
    }

    /// Signs with the current key (signing2 after rotation).
    pub fn sign(&self, claims: &Value, rotated: bool) -> String {
        let pair = if rotated { &self.k2 } else { &self.k1 };
        Self::sign_with(pair, &pair.kid, claims)
    }

    pub fn sign_unknown(&self, claims: &Value) -> String {
        Self::sign_with(&self.k2, UNKNOWN_KID, claims)
    }

    /// The published key set.
    pub fn jwks(&self, tenant_id: &str, rotated: bool) -> Value {
        let mut keys = vec![self.k1.jwk(tenant_id)];
        if rotated {
            keys.push(self.k2.jwk(tenant_id));
        }
        json!({ "keys": keys })
    }

    /// Verifies signature (published keys only), exp/nbf and that `aud` is `resource`
    /// (with or without trailing slash). Returns the claims.
    pub fn verify(&self, token: &str, resource: &str, rotated: bool) -> Result<Value, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let kid = header.kid.unwrap_or_default();
        let dec = if kid == self.k1.kid {
            &self.k1.dec
        } else if rotated && kid == self.k2.kid {
            &self.k2.dec
        } else {
            return Err(AuthError::Invalid(format!("unknown kid '{kid}'")));
        };
        let r = resource.trim_end_matches('/');
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[r.to_string(), format!("{r}/")]);
        v.set_required_spec_claims(&["exp", "aud"]);
        v.validate_nbf = true;
        match jsonwebtoken::decode::<Value>(token, dec, &v) {
            Ok(d) => Ok(d.claims),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidAudience) => {
                Err(AuthError::WrongAudience)
            }
            Err(e) => Err(AuthError::Invalid(e.to_string())),
        }
    }

    /// Extracts and verifies the bearer token of `req` for `resource`.
    pub fn verify_request(
        &self,
        req: &HttpRequest,
        resource: &str,
        rotated: bool,
    ) -> Result<Value, AuthError> {
        let Some(h) = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(AuthError::Missing);
        };
        let h = h.trim();
        let token = match h.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(AuthError::Missing),
        };
        self.verify(token, resource, rotated)
    }
}
