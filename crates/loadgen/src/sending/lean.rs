//! A lean unary gRPC client for the benchmarks' hot loops: one HTTP/2 connection driven by
//! the `h2` crate directly. A call's HEADERS and DATA frames are queued together and leave
//! in one write, and nothing stands between the caller and the connection: no buffer task,
//! no dispatch channel, no body pipe task (tonic's channel has all three, each a hand-off
//! between tasks and often between threads). On a current-thread runtime the caller and the
//! connection's task share one thread, so a call costs no cross-thread wake-up in the
//! client. It speaks the same wire protocol as the generated clients (unary calls, protobuf
//! messages, the `grpc-status` trailer); what it measures is the worker's time, not a
//! client library's.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use iluvatar_rpc as rpc;
use prost::Message;
use tonic::{Code, Status};

/// The worker's invoke method.
pub const WORKER_INVOKE: &str = "/iluvatar_rpc.IluvatarWorker/invoke";
/// The controller's invoke method (the same messages).
pub const CONTROLLER_INVOKE: &str = "/iluvatar_rpc.IluvatarController/invoke";

/// One HTTP/2 connection to a gRPC server. Clones share the connection; calls on clones run
/// concurrently as separate streams.
#[derive(Clone)]
pub struct LeanClient {
    send: h2::client::SendRequest<Bytes>,
    /// `http://host:port`, the authority of every request.
    base: String,
    authorization: Option<http::HeaderValue>,
}

impl LeanClient {
    /// Connects to `endpoint` (`http://host:port`), sending `auth`'s token with every call.
    /// The connection is driven by a task spawned on the current runtime.
    pub async fn connect(endpoint: &str, auth: &rpc::auth::ClientAuth) -> anyhow::Result<Self> {
        let base = endpoint.trim_end_matches('/').to_string();
        let address = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("{endpoint}: only http:// endpoints are supported"))?;
        let tcp = tokio::net::TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake::<_, Bytes>(tcp)
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let authorization = auth.header_value().map(http::HeaderValue::from_str).transpose()?;
        Ok(LeanClient { send, base, authorization })
    }

    /// Invokes a function on a worker.
    pub async fn invoke(&self, req: &rpc::InvokeRequest) -> Result<rpc::InvokeResponse, Status> {
        self.unary(WORKER_INVOKE, req).await
    }

    /// One unary call of `path` (`/package.Service/method`).
    pub async fn unary<Req: Message, Resp: Message + Default>(&self, path: &str, req: &Req) -> Result<Resp, Status> {
        let mut body = BytesMut::with_capacity(5 + req.encoded_len());
        body.put_u8(0); // not compressed
        body.put_u32(req.encoded_len() as u32);
        req.encode(&mut body).map_err(|e| Status::internal(format!("encoding the request: {e}")))?;
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(v) = &self.authorization {
            request = request.header(rpc::auth::HEADER, v.clone());
        }
        let request = request.body(()).map_err(|e| Status::internal(format!("building the request: {e}")))?;
        let mut send = self.send.clone().ready().await.map_err(connection_error)?;
        let (response, mut stream) = send.send_request(request, false).map_err(connection_error)?;
        stream.send_data(body.freeze(), true).map_err(connection_error)?;
        let response = response.await.map_err(connection_error)?;
        let (head, mut body) = response.into_parts();
        if head.status != http::StatusCode::OK {
            return Err(Status::unknown(format!("the server answered HTTP {}", head.status)));
        }
        // A trailers-only answer carries its status in the headers.
        if let Some(status) = status_of(&head.headers) {
            return Err(status.err().unwrap_or_else(|| Status::internal("the answer has no message")));
        }
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(connection_error)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if message.len() + chunk.len() > 5 + rpc::MAX_MESSAGE_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "the answer is larger than {} bytes",
                    rpc::MAX_MESSAGE_BYTES
                )));
            }
            message.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(connection_error)?;
        match trailers.as_ref().and_then(status_of) {
            Some(Ok(())) => {}
            Some(Err(status)) => return Err(status),
            None => return Err(Status::internal("the answer ended without a grpc-status")),
        }
        decode(message.freeze())
    }
}

/// The message of a gRPC answer's body: one uncompressed, length-prefixed message.
fn decode<M: Message + Default>(mut body: Bytes) -> Result<M, Status> {
    if body.len() < 5 {
        return Err(Status::internal(format!("the answer's body has {} bytes, not a message", body.len())));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::internal("the answer is compressed, which was not asked for"));
    }
    if len != body.len() {
        return Err(Status::internal(format!("the answer announces {len} bytes but carries {}", body.len())));
    }
    M::decode(body).map_err(|e| Status::internal(format!("decoding the answer: {e}")))
}

/// The `grpc-status` (and `grpc-message`) of headers or trailers, if they carry one.
fn status_of(headers: &http::HeaderMap) -> Option<Result<(), Status>> {
    let code = headers.get("grpc-status")?;
    let code = code.to_str().ok().and_then(|c| c.parse::<i32>().ok()).map(Code::from).unwrap_or(Code::Unknown);
    if code == Code::Ok {
        return Some(Ok(()));
    }
    let message = headers.get("grpc-message").map(|m| percent_decode(m.as_bytes())).unwrap_or_default();
    Some(Err(Status::new(code, message)))
}

/// `grpc-message` is percent-encoded UTF-8.
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn connection_error(e: h2::Error) -> Status {
    Status::unavailable(format!("the connection failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_length_prefixed_and_uncompressed() {
        let req = rpc::PingRequest { message: "hi".into(), transaction_id: "t".into() };
        let mut framed = BytesMut::new();
        framed.put_u8(0);
        framed.put_u32(req.encoded_len() as u32);
        req.encode(&mut framed).unwrap();
        let back: rpc::PingRequest = decode(framed.clone().freeze()).unwrap();
        assert_eq!(back.message, "hi");

        let mut short = framed.clone();
        short.truncate(framed.len() - 1);
        let e = decode::<rpc::PingRequest>(short.freeze()).unwrap_err();
        assert!(e.message().contains("announces"), "{e}");
        let mut compressed = framed.clone();
        compressed[0] = 1;
        let e = decode::<rpc::PingRequest>(compressed.freeze()).unwrap_err();
        assert!(e.message().contains("compressed"), "{e}");
        let e = decode::<rpc::PingRequest>(Bytes::from_static(b"\0\0")).unwrap_err();
        assert!(e.message().contains("2 bytes"), "{e}");
    }

    #[test]
    fn the_status_comes_from_grpc_status_and_a_percent_encoded_message() {
        let mut h = http::HeaderMap::new();
        assert!(status_of(&h).is_none());
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(matches!(status_of(&h), Some(Ok(()))));
        h.insert("grpc-status", "16".parse().unwrap());
        h.insert("grpc-message", "missing%20token%3A%20x".parse().unwrap());
        let s = status_of(&h).unwrap().unwrap_err();
        assert_eq!((s.code(), s.message()), (Code::Unauthenticated, "missing token: x"));
        h.insert("grpc-status", "banana".parse().unwrap());
        assert_eq!(status_of(&h).unwrap().unwrap_err().code(), Code::Unknown);
        assert_eq!(percent_decode(b"100%"), "100%");
    }
}
