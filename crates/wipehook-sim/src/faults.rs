//! Seeded fault injection shared by the services: `draw` decides, for one
//! call, whether a rule fails it and how. The decision is a hash of the seed,
//! the rule's place in the list, the call kind, the subject and how many calls of that kind and
//! subject the rule has seen: deterministic per device, whatever the order
//! in which concurrent calls arrive.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

use crate::state::State;
use crate::types::{Fault, InjectedFault, Service};

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser.
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(seed: u64, key: &str, n: u64, salt: u64) -> u64 {
    // FNV-1a of the key, then mixed with the seed, the count and a salt.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(mix(h ^ seed) ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ salt)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The fault a rule injects into this call, if any (the first rule that
/// fires wins). `subject` is matched against a rule's; `key` (the subject
/// under a name stable across simulated tenants) seeds the draw.
pub(crate) fn draw(
    st: &mut State,
    service: Service,
    call: &str,
    subject: &str,
    key: &str,
) -> Option<Fault> {
    let seed = st.fault_seed;
    for (pos, (id, rule, used)) in st.fault_rules.iter_mut().enumerate() {
        if rule.service != service
            || rule.limit.is_some_and(|l| *used >= l)
            || rule.faults.is_empty()
        {
            continue;
        }
        let call_matches = match (&rule.call, service) {
            (None, _) => true,
            (Some(c), Service::Exchange) => c.eq_ignore_ascii_case(call),
            (Some(c), _) => call.contains(c.as_str()),
        };
        if !call_matches
            || rule
                .subject
                .as_ref()
                .is_some_and(|s| !s.eq_ignore_ascii_case(subject))
        {
            continue;
        }
        let slot = format!(
            "{pos}|{}|{}",
            call.to_ascii_lowercase(),
            key.to_ascii_lowercase()
        );
        let n = st.fault_counts.entry(slot.clone()).or_insert(0);
        let this = *n;
        *n += 1;
        if unit(hash(seed, &slot, this, 1)) >= rule.rate {
            continue;
        }
        let total: u64 = rule
            .faults
            .iter()
            .map(|(w, _)| *w as u64)
            .sum::<u64>()
            .max(1);
        let mut pick = hash(seed, &slot, this, 2) % total;
        let mut chosen = rule.faults[0].1.clone();
        for (w, f) in &rule.faults {
            if pick < *w as u64 {
                chosen = f.clone();
                break;
            }
            pick -= *w as u64;
        }
        *used += 1;
        st.fault_log.push(InjectedFault {
            rule: *id,
            service,
            call: call.to_string(),
            subject: subject.to_string(),
            fault: chosen.clone(),
            at: std::time::SystemTime::now(),
        });
        return Some(chosen);
    }
    None
}

/// An answer whose connection is closed before a response is complete: the
/// body fails, so the server drops the connection and the client sees an
/// incomplete message (or none).
pub(crate) fn dropped() -> HttpResponse {
    HttpResponse::build(StatusCode::OK).body(Dropped)
}

struct Dropped;

impl actix_web::body::MessageBody for Dropped {
    type Error = Box<dyn std::error::Error>;
    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Stream
    }
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<actix_web::web::Bytes, Self::Error>>> {
        std::task::Poll::Ready(Some(Err("simulated dropped connection".into())))
    }
}
