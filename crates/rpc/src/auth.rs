//! Bearer-token authentication, shared by every server and client of this project.
//!
//! A token is read from a file (`auth.token_file` on the servers, `--token-file` on the
//! clients). Servers check `authorization: Bearer <token>` on every gRPC call (a tonic
//! interceptor, [`ServerAuth`]) and the `Authorization` header of every HTTP request
//! ([`ServerAuth::check`], called by each HTTP front end's middleware); clients add it with
//! [`ClientAuth`]. Tokens are compared in constant time ([`constant_time_eq`]).

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;

/// The longest token accepted (a token is a secret string, not a document).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The header (gRPC metadata key) carrying the token.
pub const HEADER: &str = "authorization";

/// A bearer token: visible ASCII, no spaces. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes, redacted>)", self.0.len())
    }
}

impl Token {
    /// A token from its text (surrounding whitespace removed); `Err` says what is wrong.
    pub fn new(text: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("is empty".into());
        }
        if t.len() > MAX_TOKEN_BYTES {
            return Err(format!("is longer than {MAX_TOKEN_BYTES} bytes"));
        }
        if let Some(c) = t.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "holds a character a bearer token cannot carry ({c:?}): only visible ASCII, no spaces"
            ));
        }
        Ok(Token(t.into()))
    }

    /// Reads a token file, refusing one that cannot be read, is not a regular file, is
    /// empty, or that its group or others may access (it must be mode 0600 or stricter).
    pub fn from_file(path: &Path) -> Result<Token, String> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read token file {shown}: {e}"))?;
        // The open file's own metadata: what is checked is what is read.
        let meta = file.metadata().map_err(|e| format!("cannot read token file {shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("token file {shown} is not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let mut who = Vec::new();
            if mode & 0o070 != 0 {
                who.push("its group");
            }
            if mode & 0o007 != 0 {
                who.push("others");
            }
            return Err(format!(
                "token file {shown} is accessible by {} (mode {mode:04o}); allow its owner only: chmod 600 {shown}",
                who.join(" and ")
            ));
        }
        let mut text = String::new();
        file.take(MAX_TOKEN_BYTES as u64 + 1024)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read token file {shown}: {e}"))?;
        Token::new(&text).map_err(|why| format!("token file {shown} {why}"))
    }

    /// The token, for a header; keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Whether `a` and `b` are equal, in a time that depends on `a`'s length only (`a` is the
/// expected token, `b` what a client sent): no early exit at the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff: u8 = 0;
    for (i, &x) in a.iter().enumerate() {
        // A missing byte of `b` counts as different (`!x` differs from `x` in every bit).
        let y = b.get(i).copied().unwrap_or(!x);
        diff |= x ^ y;
    }
    // black_box: keep the compiler from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0 && a.len() == b.len()
}

/// Whether a listen address is a loopback one: 127.0.0.0/8, ::1 (also as `[::1]` or
/// IPv4-mapped) or `localhost`. Any other name counts as not loopback.
pub fn is_loopback(address: &str) -> bool {
    let a = address.trim();
    let a = a.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(a);
    a.eq_ignore_ascii_case("localhost") || a.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    NotBearer,
    Wrong,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Missing => {
                "missing token: send the header `authorization: Bearer <token>` (clients: --token-file)"
            }
            Refusal::NotBearer => "the authorization header is not `Bearer <token>`",
            Refusal::Wrong => "wrong token",
        })
    }
}

/// A server's check: open (no token configured) or one expected token.
#[derive(Clone, Default)]
pub struct ServerAuth {
    expected: Option<Token>,
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.expected.is_some() { "ServerAuth(token)" } else { "ServerAuth(open)" })
    }
}

impl ServerAuth {
    /// Accepts every request.
    pub fn open() -> Self {
        ServerAuth { expected: None }
    }

    pub fn with_token(token: Token) -> Self {
        ServerAuth { expected: Some(token) }
    }

    /// Whether a token is required.
    pub fn requires_token(&self) -> bool {
        self.expected.is_some()
    }

    /// Checks the value of the `authorization` header (or metadata), if any.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(expected) = &self.expected else { return Ok(()) };
        let value = authorization.ok_or(Refusal::Missing)?;
        // The scheme is case-insensitive (RFC 7235); one or more spaces follow it.
        let given = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii(),
            _ => return Err(Refusal::NotBearer),
        };
        if constant_time_eq(expected.expose().as_bytes(), given) { Ok(()) } else { Err(Refusal::Wrong) }
    }

    /// Decides how a server starts: `token_file` (None: no token) and whether `insecure`
    /// allows serving without a token off loopback. `listens` are (config field, address)
    /// pairs; without a token, any that is not loopback refuses the start unless `insecure`.
    pub fn configure(token_file: Option<&Path>, insecure: bool, listens: &[(&str, &str)]) -> Result<Self, String> {
        if let Some(path) = token_file {
            return Ok(ServerAuth::with_token(Token::from_file(path).map_err(|e| format!("auth.token_file: {e}"))?));
        }
        if !insecure && let Some((field, address)) = listens.iter().find(|(_, a)| !is_loopback(a)) {
            return Err(format!(
                "{field} {address:?} is not a loopback address and no token is configured: anyone who can reach \
                 it could register and invoke anything. Set auth.token_file to a file (mode 0600) holding a \
                 token, or set auth.insecure = true to serve without authentication"
            ));
        }
        Ok(ServerAuth::open())
    }
}

/// What a worker or controller needs at start: the check of its own APIs
/// ([`ServerAuth::configure`]) and the token it sends to its peer (`peer_field` names the
/// config field of `peer_token_file`; without it, `token_file`'s token is sent, if any).
/// The third value says the service is serving off loopback without a token (`insecure`).
pub fn configure_service(
    token_file: Option<&Path>,
    peer_field: &str,
    peer_token_file: Option<&Path>,
    insecure: bool,
    listens: &[(&str, &str)],
) -> Result<(ServerAuth, ClientAuth, bool), String> {
    let server = ServerAuth::configure(token_file, insecure, listens)?;
    let client = match peer_token_file {
        Some(p) => ClientAuth::from_file(Some(p)).map_err(|e| format!("{peer_field}: {e}"))?,
        None => ClientAuth::from_file(token_file).map_err(|e| format!("auth.token_file: {e}"))?,
    };
    let exposed = !server.requires_token() && listens.iter().any(|(_, a)| !is_loopback(a));
    Ok((server, client, exposed))
}

/// [`configure_service`] for a daemon whose gRPC API listens at `grpc_address` and whose
/// HTTP API, when enabled, at `http_address`; logs a warning when it will serve off
/// loopback without a token. Returns the check of its own APIs and its peer's token.
pub fn for_service(
    token_file: Option<&Path>,
    peer_field: &str,
    peer_token_file: Option<&Path>,
    insecure: bool,
    grpc_address: &str,
    http_address: Option<&str>,
) -> Result<(ServerAuth, ClientAuth), String> {
    let mut listens = vec![("grpc.address", grpc_address)];
    if let Some(address) = http_address {
        listens.push(("http.address", address));
    }
    let (server, client, exposed) = configure_service(token_file, peer_field, peer_token_file, insecure, &listens)?;
    if exposed {
        tracing::warn!(?listens, "serving off loopback without authentication (auth.insecure = true)");
    }
    Ok((server, client))
}

impl tonic::service::Interceptor for ServerAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = request.metadata().get(HEADER).map(|v| v.as_bytes());
        match self.check(value) {
            Ok(()) => Ok(request),
            Err(why) => Err(tonic::Status::unauthenticated(why.to_string())),
        }
    }
}

/// A client's side: adds `authorization: Bearer <token>` to every call when it has a token.
#[derive(Clone, Default)]
pub struct ClientAuth {
    value: Option<AsciiMetadataValue>,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.value.is_some() { "ClientAuth(token)" } else { "ClientAuth(none)" })
    }
}

impl ClientAuth {
    /// Sends no token.
    pub fn none() -> Self {
        ClientAuth { value: None }
    }

    pub fn with_token(token: &Token) -> Self {
        let mut v: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {}", token.expose()))
            .expect("a token is visible ASCII, so it is a valid header value");
        v.set_sensitive(true);
        ClientAuth { value: Some(v) }
    }

    /// The token of `path`, or none without a path.
    pub fn from_file(path: Option<&Path>) -> Result<Self, String> {
        Ok(match path {
            Some(p) => ClientAuth::with_token(&Token::from_file(p)?),
            None => ClientAuth::none(),
        })
    }

    /// The `Authorization` header's value for plain HTTP requests, if any.
    pub fn header_value(&self) -> Option<&str> {
        self.value.as_ref().and_then(|v| v.to_str().ok())
    }
}

impl tonic::service::Interceptor for ClientAuth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.value {
            request.metadata_mut().insert(HEADER, v.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry a [`ClientAuth`]'s token.
pub type AuthChannel = tonic::service::interceptor::InterceptedService<Channel, ClientAuth>;
pub type WorkerClient = crate::iluvatar_worker_client::IluvatarWorkerClient<AuthChannel>;
pub type ControllerClient = crate::iluvatar_controller_client::IluvatarControllerClient<AuthChannel>;
pub type ClusterAdminClient = crate::iluvatar_cluster_admin_client::IluvatarClusterAdminClient<AuthChannel>;

/// A worker client that sends `auth`'s token, with the agreed message limits.
pub fn worker_client(channel: Channel, auth: ClientAuth) -> WorkerClient {
    crate::iluvatar_worker_client::IluvatarWorkerClient::with_interceptor(channel, auth)
        .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
}

/// A controller client that sends `auth`'s token, with the agreed message limits.
pub fn controller_client(channel: Channel, auth: ClientAuth) -> ControllerClient {
    crate::iluvatar_controller_client::IluvatarControllerClient::with_interceptor(channel, auth)
        .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
}

/// A client of a controller's own membership service that sends `auth`'s token.
pub fn cluster_admin_client(channel: Channel, auth: ClientAuth) -> ClusterAdminClient {
    crate::iluvatar_cluster_admin_client::IluvatarClusterAdminClient::with_interceptor(channel, auth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"secret-token", b"Secret-token"), "first byte differs");
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"), "last byte differs");
        assert!(!constant_time_eq(b"secret-token", b"secret-toke"), "a prefix");
        assert!(!constant_time_eq(b"secret-token", b"secret-token2"), "longer");
        assert!(!constant_time_eq(b"secret-token", b""), "empty");
        assert!(!constant_time_eq(b"", b"x"));
        // A missing byte counts as different even when the expected byte is 0xff or 0.
        assert!(!constant_time_eq(&[0xff], &[]));
        assert!(!constant_time_eq(&[0x00, 0x00], &[0x00]));
        // Every single-bit change at every position is caught.
        let a = b"0123456789abcdef";
        for i in 0..a.len() {
            for bit in 0..8 {
                let mut b = *a;
                b[i] ^= 1 << bit;
                assert!(!constant_time_eq(a, &b), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn loopback_addresses() {
        for a in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost", "::ffff:127.0.0.1"] {
            assert!(is_loopback(a), "{a}");
        }
        for a in ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.org", "", "128.0.0.1"] {
            assert!(!is_loopback(a), "{a}");
        }
    }

    #[test]
    fn server_checks_the_bearer_header() {
        let auth = ServerAuth::with_token(Token::new("s3cret\n").unwrap());
        assert_eq!(auth.check(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(auth.check(Some(b"bearer  s3cret ")), Ok(()));
        assert_eq!(auth.check(None), Err(Refusal::Missing));
        assert_eq!(auth.check(Some(b"Bearer s3cre")), Err(Refusal::Wrong));
        assert_eq!(auth.check(Some(b"Bearer ")), Err(Refusal::Wrong));
        assert_eq!(auth.check(Some(b"Basic czNjcmV0")), Err(Refusal::NotBearer));
        assert_eq!(auth.check(Some(b"s3cret")), Err(Refusal::NotBearer));
        assert_eq!(ServerAuth::open().check(None), Ok(()));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn tokens_are_refused_by_reason() {
        assert!(Token::new("  ").unwrap_err().contains("empty"));
        assert!(Token::new("a b").unwrap_err().contains("visible ASCII"));
        assert!(Token::new("é").unwrap_err().contains("visible ASCII"));
        assert!(Token::new(&"x".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err().contains("longer"));
        assert!(!format!("{:?}", Token::new("hidden").unwrap()).contains("hidden"));
    }

    fn file(name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("iluvatar-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn token_files_are_checked() {
        let good = file("good", "tok-123\n", 0o600);
        assert_eq!(Token::from_file(&good).unwrap().expose(), "tok-123");
        assert_eq!(Token::from_file(&file("ro", "tok", 0o400)).unwrap().expose(), "tok");
        let e = Token::from_file(&file("empty", "\n", 0o600)).unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        let e = Token::from_file(&file("group", "tok", 0o640)).unwrap_err();
        assert!(e.contains("its group") && !e.contains("others") && e.contains("0640"), "{e}");
        let e = Token::from_file(&file("world", "tok", 0o604)).unwrap_err();
        assert!(e.contains("others") && !e.contains("group") && e.contains("chmod 600"), "{e}");
        let e = Token::from_file(&file("both", "tok", 0o644)).unwrap_err();
        assert!(e.contains("its group and others"), "{e}");
        let missing = good.with_file_name("missing");
        let e = Token::from_file(&missing).unwrap_err();
        assert!(e.contains("cannot read token file") && e.contains("missing"), "{e}");
        let e = Token::from_file(good.parent().unwrap()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_server_off_loopback_needs_a_token_or_insecure() {
        let listens = [("grpc.address", "127.0.0.1"), ("http.address", "0.0.0.0")];
        let e = ServerAuth::configure(None, false, &listens).unwrap_err();
        assert!(e.contains("http.address \"0.0.0.0\""), "{e}");
        assert!(e.contains("auth.token_file") && e.contains("auth.insecure = true"), "{e}");
        assert!(!ServerAuth::configure(None, true, &listens).unwrap().requires_token());
        assert!(!ServerAuth::configure(None, false, &listens[..1]).unwrap().requires_token());
        let good = file("cfg", "tok", 0o600);
        assert!(ServerAuth::configure(Some(&good), false, &listens).unwrap().requires_token());
        let e = ServerAuth::configure(Some(&file("cfg-bad", "tok", 0o644)), true, &listens).unwrap_err();
        assert!(e.starts_with("auth.token_file: token file"), "{e}");
    }

    #[test]
    fn a_service_names_the_listen_that_needs_a_token() {
        let (server, client) = for_service(None, "auth.peer_token_file", None, false, "127.0.0.1", None).unwrap();
        assert!(!server.requires_token() && client.header_value().is_none());
        let e = for_service(None, "auth.peer_token_file", None, false, "127.0.0.1", Some("0.0.0.0")).unwrap_err();
        assert!(e.starts_with("http.address \"0.0.0.0\""), "{e}");
        let e = for_service(None, "auth.peer_token_file", None, false, "0.0.0.0", Some("127.0.0.1")).unwrap_err();
        assert!(e.starts_with("grpc.address \"0.0.0.0\""), "{e}");
        assert!(for_service(None, "auth.peer_token_file", None, true, "0.0.0.0", Some("0.0.0.0")).is_ok());
        let missing = Path::new("/nonexistent/peer-token");
        let e = for_service(None, "auth.peer_token_file", Some(missing), false, "127.0.0.1", None).unwrap_err();
        assert!(e.starts_with("auth.peer_token_file: "), "{e}");
    }

    #[test]
    fn clients_send_the_header() {
        use tonic::service::Interceptor;
        let mut c = ClientAuth::with_token(&Token::new("abc").unwrap());
        assert_eq!(c.header_value(), Some("Bearer abc"));
        let r = c.call(tonic::Request::new(())).unwrap();
        let mut s = ServerAuth::with_token(Token::new("abc").unwrap());
        assert!(s.call(r).is_ok());
        let r = ClientAuth::none().call(tonic::Request::new(())).unwrap();
        let status = s.call(r).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("missing token"), "{}", status.message());
    }
}
