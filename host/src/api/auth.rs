//! Bearer tokens: one for operators (every mutating call, and reads when `protect_reads` is on), one for
//! agents. Compared in constant time.

use tonic::Status;

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A read: open unless reads are protected.
    Read,
    /// A change: always the operator token.
    Write,
    /// Joining as an agent: the agent token.
    Agent,
}

/// The tokens the master accepts.
#[derive(Clone, Debug)]
pub struct Auth {
    pub token: String,
    pub agent_token: String,
    pub protect_reads: bool,
}

/// The token in an `authorization` header: `Bearer <token>`, or Marathon/DC/OS's `token=<token>`.
pub fn presented(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("token=")).map(str::trim)
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Checks a call's `authorization` header. The error says what the call needs.
    pub fn check(&self, header: Option<&str>, need: Need) -> Result<(), String> {
        let (expected, what) = match need {
            Need::Read if !self.protect_reads => return Ok(()),
            Need::Read | Need::Write => (&self.token, "the operator token"),
            Need::Agent => (&self.agent_token, "the agent token"),
        };
        match presented(header) {
            Some(token) if same(token, expected) => Ok(()),
            Some(_) => Err(format!("the token presented is not {what}")),
            None => Err(format!(
                "this call needs {what}: send `authorization: Bearer <token>` (the berth CLI reads it from \
                 --token, $BERTH_TOKEN or <data-dir>/token)"
            )),
        }
    }

    /// [`Auth::check`] for a gRPC request.
    pub fn grpc<T>(&self, request: &tonic::Request<T>, need: Need) -> Result<(), Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        self.check(header, need).map_err(Status::unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(protect_reads: bool) -> Auth {
        Auth { token: "op".into(), agent_token: "ag".into(), protect_reads }
    }

    #[test]
    fn writes_need_the_operator_token_and_reads_are_open_by_default() {
        let a = auth(false);
        assert!(a.check(None, Need::Read).is_ok());
        let err = a.check(None, Need::Write).unwrap_err();
        assert!(err.contains("needs the operator token"), "{err}");
        assert!(a.check(Some("Bearer op"), Need::Write).is_ok());
        assert!(a.check(Some("token=op"), Need::Write).is_ok());
        assert!(a.check(Some("Bearer ag"), Need::Write).unwrap_err().contains("not the operator token"));
        assert!(a.check(Some("Bearer op"), Need::Agent).is_err());
        assert!(a.check(Some("Bearer ag"), Need::Agent).is_ok());
    }

    #[test]
    fn protected_reads_say_what_they_need() {
        let err = auth(true).check(None, Need::Read).unwrap_err();
        assert!(err.contains("operator token") && err.contains("BERTH_TOKEN"), "{err}");
    }
}
