//! The CLI's connection to a master: the address, the operator token, and error messages that say what
//! went wrong in one line.

use anyhow::Context as _;
use berth_proto::v1 as pb;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::default_data_dir;

/// Adds the token to every call.
#[derive(Clone)]
pub struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Svc = InterceptedService<Channel, Token>;

/// Clients for every service.
pub struct Client {
    pub plugins: pb::plugin_service_client::PluginServiceClient<Svc>,
    pub frameworks: pb::framework_service_client::FrameworkServiceClient<Svc>,
    pub nodes: pb::node_service_client::NodeServiceClient<Svc>,
    pub tasks: pb::task_service_client::TaskServiceClient<Svc>,
}

/// The token: the flag or `$BERTH_TOKEN`, else the token file of the default data directory (where a
/// local `berth serve` writes it).
pub fn token(given: Option<String>) -> Option<String> {
    given.or_else(|| {
        let path = default_data_dir("berth").ok()?.join("token");
        std::fs::read_to_string(path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
    })
}

impl Client {
    /// Connects to the master the flags name, over TLS when its address is `https://`.
    pub async fn connect(args: &super::ClientArgs) -> anyhow::Result<Client> {
        let token_flag = args.token.clone();
        let tls = crate::api::tls::ClientTls { ca: args.ca.clone(), identity: None };
        // With several masters, the first that answers (standbys proxy to the leader).
        let mut failure = None;
        let mut channel = None;
        for address in args.master.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let endpoint = tonic::transport::Endpoint::from_shared(address.to_string())
                .with_context(|| format!("invalid master address `{address}`"))?;
            match tls
                .apply(address, endpoint)?
                .connect_timeout(std::time::Duration::from_secs(5))
                .connect()
                .await
            {
                Ok(connected) => {
                    channel = Some(connected);
                    break;
                }
                Err(e) => {
                    failure =
                        Some(anyhow::Error::new(e).context(format!(
                            "cannot reach the master at {address} (is `berth serve` running?)"
                        )))
                }
            }
        }
        let channel = match (channel, failure) {
            (Some(channel), _) => channel,
            (None, Some(e)) => return Err(e),
            (None, None) => anyhow::bail!("no master address given"),
        };
        let token = Token(match token(token_flag) {
            Some(t) => Some(format!("Bearer {t}").parse().context("the token is not a valid header value")?),
            None => None,
        });
        let max = crate::api::MAX_MESSAGE;
        Ok(Client {
            plugins: pb::plugin_service_client::PluginServiceClient::with_interceptor(
                channel.clone(),
                token.clone(),
            )
            .max_encoding_message_size(max)
            .max_decoding_message_size(max),
            frameworks: pb::framework_service_client::FrameworkServiceClient::with_interceptor(
                channel.clone(),
                token.clone(),
            ),
            nodes: pb::node_service_client::NodeServiceClient::with_interceptor(
                channel.clone(),
                token.clone(),
            ),
            tasks: pb::task_service_client::TaskServiceClient::with_interceptor(channel, token),
        })
    }
}

/// Turns a gRPC status into the one-line error the CLI prints.
pub fn status(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}
