//! The SASL layer, for the clients that send one: `MSSBCBS` (uamqp, hence the Python SDK) and
//! `ANONYMOUS` (Java) defer authentication to `$cbs`; `PLAIN` (older SDKs) carries a SAS token
//! as the password of `{policy}@sas.root.{hub}`.

use std::sync::Arc;

use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::types::primitives::{Array, Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslChallenge, SaslCode, SaslInit, SaslOutcome, SaslResponse};

use super::access::{Access, check, sas_field};
use crate::hub::Shared;

const MSSBCBS: &str = "MSSBCBS";
const PLAIN: &str = "PLAIN";
const ANONYMOUS: &str = "ANONYMOUS";

/// One connection's SASL exchange; fe2o3 clones it per connection, and the grant it makes
/// lands in the connection's [`Access`].
#[derive(Clone)]
pub(crate) struct HubSasl {
    shared: Arc<Shared>,
    access: Arc<Access>,
    /// PLAIN was chosen without an initial response: the credentials come in the response.
    awaiting_plain: bool,
}

impl HubSasl {
    pub(crate) fn new(shared: Arc<Shared>, access: Arc<Access>) -> Self {
        Self {
            shared,
            access,
            awaiting_plain: false,
        }
    }

    fn plain(&self, response: &[u8]) -> SaslCode {
        // authzid NUL authcid NUL password
        let mut parts = response.split(|b| *b == 0);
        let (Some(_), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return SaslCode::Auth;
        };
        let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(password))
        else {
            return SaslCode::Auth;
        };
        match self.plain_grant(user, password) {
            Some(()) => SaslCode::Ok,
            None => SaslCode::Auth,
        }
    }

    fn plain_grant(&self, user: &str, password: &str) -> Option<()> {
        let (policy, scope) = user.split_once('@')?;
        let expected = format!("sas.root.{}", self.shared.hub_name);
        if !scope.eq_ignore_ascii_case(&expected) || sas_field(password, "skn")? != policy {
            return None;
        }
        let grant = check(&self.shared, password).ok()?;
        self.access.extend(grant);
        Some(())
    }
}

fn outcome(code: SaslCode) -> SaslServerFrame {
    SaslServerFrame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    })
}

impl SaslAcceptor for HubSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![
            Symbol::from(MSSBCBS),
            Symbol::from(PLAIN),
            Symbol::from(ANONYMOUS),
        ])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        match init.mechanism.as_str() {
            MSSBCBS | ANONYMOUS => outcome(SaslCode::Ok),
            PLAIN => match init.initial_response {
                Some(response) => outcome(self.plain(&response)),
                None => {
                    self.awaiting_plain = true;
                    SaslServerFrame::Challenge(SaslChallenge {
                        challenge: Binary::from(Vec::new()),
                    })
                }
            },
            _ => outcome(SaslCode::Auth),
        }
    }

    fn on_response(&mut self, response: SaslResponse) -> SaslServerFrame {
        if std::mem::take(&mut self.awaiting_plain) {
            outcome(self.plain(&response.response))
        } else {
            outcome(SaslCode::Auth)
        }
    }
}
