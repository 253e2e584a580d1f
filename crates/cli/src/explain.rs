//! Failures to reach a service, or of a call, said in the user's terms: which address, and
//! what the common mistake behind it is (the HTTP port given for the gRPC one, a worker
//! addressed as a controller, nothing listening, a missing token).

use std::error::Error;

/// Where the CLI talks to.
pub struct Target {
    /// `host:port`.
    pub address: String,
    pub controller: bool,
}

impl Target {
    fn what(&self) -> &'static str {
        if self.controller { "controller" } else { "worker" }
    }

    fn port_hint(&self) -> String {
        let (default, key) = if self.controller { (8089, "the controller's") } else { (8079, "the worker's") };
        format!("--port takes {key} gRPC port (grpc.port, {default} by default; its ready line prints it)")
    }

    /// A connection that could not be made.
    pub fn unreachable(&self, e: &tonic::transport::Error) -> anyhow::Error {
        let chain = chain(e);
        let address = &self.address;
        let what = self.what();
        let why = if chain.contains("connection refused") {
            format!("nothing listens at {address} (connection refused): is the {what} running? {}", self.port_hint())
        } else if chain.contains("dns error") || chain.contains("failed to lookup") {
            let host = address.rsplit_once(':').map_or(address.as_str(), |(h, _)| h);
            format!("cannot resolve the host {host:?} (--address)")
        } else if chain.contains("timed out") || chain.contains("timeout") {
            format!("no connection to {address} within {} s: is the address right?", CONNECT_TIMEOUT.as_secs())
        } else {
            format!("cannot reach the {what} at {address}: {}", chain.trim_start_matches(": "))
        };
        anyhow::anyhow!(why)
    }

    /// A call's failure status, with the likely mistake when it is a common one.
    pub fn failed(&self, s: tonic::Status) -> anyhow::Error {
        let address = &self.address;
        let message = s.message();
        let text = format!("{message}{}", chain(&s)).to_lowercase();
        let http_port = format!(
            "the server at {address} answered plain HTTP, not gRPC: this looks like the HTTP port. {}",
            self.port_hint()
        );
        let why = match s.code() {
            // This project's HTTP port says so itself.
            tonic::Code::Unimplemented if message.contains("HTTP/JSON port") => format!("{address}: {message}"),
            tonic::Code::Unimplemented if text.contains("grpc-status header missing") => {
                let status = message.rsplit("HTTP status code ").next().filter(|c| c.len() <= 3);
                match status {
                    Some(code) => format!("{http_port} (HTTP status {code})"),
                    None => http_port,
                }
            }
            tonic::Code::Internal if text.contains("h2 protocol error") || text.contains("frame with invalid size") => {
                format!(
                    "the server at {address} does not speak gRPC (HTTP/2): this looks like an HTTP port. {}",
                    self.port_hint()
                )
            }
            tonic::Code::Unknown | tonic::Code::Internal if text.contains("transport error") => format!(
                "the connection to {address} broke before any gRPC answer ({message}{}): is it a gRPC port? {}",
                chain(&s),
                self.port_hint()
            ),
            tonic::Code::Unimplemented if self.controller => format!(
                "the server at {address} does not serve the controller's calls: is it a worker? Drop --controller \
                 (and give the worker's gRPC port)"
            ),
            tonic::Code::Unimplemented => format!(
                "the server at {address} does not serve the worker's calls: is it a controller? Add --controller \
                 (the controller offers ping, register, invoke, invoke-async, invoke-async-check, prewarm and \
                 deregister-worker)"
            ),
            tonic::Code::Unauthenticated => format!(
                "the {} at {address} refused the call: {message} (give its token with --token-file or \
                 ILUVATAR_TOKEN_FILE)",
                self.what()
            ),
            tonic::Code::Unavailable if text.contains("connection refused") || text.contains("connect error") => {
                format!("the {} at {address} cannot be reached: {message}", self.what())
            }
            code => format!("{code:?}: {message}"),
        };
        anyhow::anyhow!(why)
    }
}

/// How long a connection may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The messages of an error's sources, lower-cased, each after ": ".
fn chain(e: &dyn Error) -> String {
    let mut text = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string().to_lowercase());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> Target {
        Target { address: "127.0.0.1:8080".into(), controller: false }
    }

    #[test]
    fn the_http_port_is_named_as_the_likely_mistake() {
        let s = tonic::Status::unimplemented("grpc-status header missing, mapped from HTTP status code 404");
        let e = worker().failed(s).to_string();
        assert!(e.contains("this looks like the HTTP port") && e.contains("(HTTP status 404)"), "{e}");
        assert!(e.contains("127.0.0.1:8080") && e.contains("8079 by default"), "{e}");
        let s = tonic::Status::internal("h2 protocol error: http2 error");
        let e = worker().failed(s).to_string();
        assert!(e.contains("does not speak gRPC") && e.contains("this looks like an HTTP port"), "{e}");
    }

    #[test]
    fn a_worker_and_a_controller_are_told_apart() {
        let e = worker().failed(tonic::Status::unimplemented("")).to_string();
        assert!(e.contains("is it a controller? Add --controller"), "{e}");
        let controller = Target { address: "h:1".into(), controller: true };
        let e = controller.failed(tonic::Status::unimplemented("")).to_string();
        assert!(e.contains("is it a worker? Drop --controller"), "{e}");
        let e = controller.failed(tonic::Status::unauthenticated("missing token")).to_string();
        assert!(e.contains("missing token") && e.contains("--token-file"), "{e}");
        let e = worker().failed(tonic::Status::unknown("transport error")).to_string();
        assert!(e.contains("broke before any gRPC answer") && e.contains("is it a gRPC port?"), "{e}");
        let e = worker().failed(tonic::Status::not_found("function x")).to_string();
        assert_eq!(e, "NotFound: function x");
    }
}
