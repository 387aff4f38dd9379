//! Outbound HTTP (`wasi:http/outgoing-handler`): only to the hosts a function
//! lists in `allowed_outbound_hosts`; anything else is refused and logged with the
//! host's name.

use std::sync::Arc;

use nimbus_core::app::OutboundHost;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::LogTag;

pub struct Outbound {
    pub allowed: Arc<Vec<OutboundHost>>,
    pub app: String,
    pub function: String,
    pub tag: LogTag,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        if !self.allowed.iter().any(|a| a.allows(&scheme, &host, port)) {
            tracing::warn!(
                app = %self.app,
                function = %self.function,
                request_id = %self.tag.request_id(),
                "outbound request to `{host}:{port}` refused: not in allowed_outbound_hosts"
            );
            return Box::new(async move { Err(Error::HttpRequestDenied) });
        }
        let default: &mut dyn WasiHttpHooks = Default::default();
        default.send_request(request, options, fut)
    }
}
