//! The reference server protocol's client: times, answers, and HTTP/socket framing against
//! scripted peers that send exactly the bytes a test gives (well-formed or hostile).

use super::*;
use std::io::{Read, Write};

const T0: u64 = 1_709_642_096_000_000; // 2024-03-05 12:34:56 UTC

#[test]
fn reference_times_parse_with_and_without_an_offset() {
    assert_eq!(parse_time("2024-03-05 12:34:56:123456+"), Some(T0 + 123_456));
    assert_eq!(parse_time("2024-03-05 12:34:56:123456++0000"), Some(T0 + 123_456));
    assert_eq!(parse_time("2024-03-05 07:34:56:000001+-0500"), Some(T0 + 1));
    assert_eq!(parse_time("2024-03-05 18:04:56:5++05:30"), Some(T0 + 500_000));
    assert_eq!(parse_time("1970-01-01 00:00:00:000000+"), Some(0));
    for bad in [
        "",
        "2024-03-05T12:34:56:123456+",
        "2024-03-05 12:34:56.123456+",
        "2024-13-05 12:34:56:123456+",
        "2024-03-05 12:34:56:+",
        "2024-03-05 12:34:56:123456",
        "2024-03-05 12:34:56:123456+x0100",
        "1969-12-31 23:59:59:000000+",
        "２０２4-03-05 12:34:56:123456+",
    ] {
        assert_eq!(parse_time(bad), None, "{bad:?}");
    }
}

#[test]
fn times_outside_the_call_are_placed_by_its_duration() {
    let w = Window { sent_us: T0, received_us: T0 + 10_000 };
    let inside = ("2024-03-05 12:34:56:001000+", "2024-03-05 12:34:56:004000+");
    assert_eq!(place(Some(inside.0), Some(inside.1), Some(0.003), w), (T0 + 1000, T0 + 4000));
    // A server writing local time of another zone, without its offset: one hour off.
    let zoned = ("2024-03-05 13:34:56:001000+", "2024-03-05 13:34:56:004000+");
    assert_eq!(place(Some(zoned.0), Some(zoned.1), Some(0.003), w), (T0 + 7000, T0 + 10_000));
    // Nothing readable: the whole window; a duration longer than the window is cut to it.
    assert_eq!(place(None, Some("junk"), None, w), (T0, T0 + 10_000));
    assert_eq!(place(None, None, Some(99.0), w), (T0, T0 + 10_000));
    assert_eq!(place(None, None, Some(f64::NAN), w), (T0, T0 + 10_000));
}

fn window() -> Window {
    Window { sent_us: T0, received_us: T0 + 1_000_000 }
}

fn answer(extra: &str) -> String {
    format!(
        r#"{{"start": "2024-03-05 12:34:56:100000+", "end": "2024-03-05 12:34:56:200000+", "was_cold": true, "duration_sec": 0.1, {extra}}}"#
    )
}

fn protocol_message(r: Result<CallResult, AgentFailure>) -> String {
    match r {
        Err(AgentFailure::Protocol(p)) => p.to_string(),
        other => panic!("expected a protocol failure, got {other:?}"),
    }
}

#[test]
fn answers_map_onto_results_function_errors_and_failures() {
    let ok = call_result(Some(200), answer(r#""user_result": "{\"greeting\": \"hi\"}""#).as_bytes(), window()).unwrap();
    assert_eq!(ok.output.unwrap(), r#"{"greeting": "hi"}"#);
    assert_eq!((ok.start_unix_us, ok.end_unix_us, ok.first_call), (T0 + 100_000, T0 + 200_000, true));
    let socket = call_result(None, answer(r#""user_result": "3""#).as_bytes(), window()).unwrap();
    assert_eq!(socket.output.unwrap(), "3");

    // user_error: ours (kind, message, traceback) or the reference's (any JSON value).
    let shaped = r#""user_error": "{\"kind\": \"ValueError\", \"message\": \"boom\", \"traceback\": \"tb\"}""#;
    let fe = call_result(Some(422), answer(shaped).as_bytes(), window()).unwrap().output.unwrap_err();
    assert_eq!((fe.kind.as_str(), fe.message.as_str(), fe.traceback.as_str()), ("ValueError", "boom", "tb"));
    let plain = call_result(Some(422), answer(r#""user_error": "\"it broke\"""#).as_bytes(), window());
    let fe = plain.unwrap().output.unwrap_err();
    assert_eq!((fe.kind.as_str(), fe.message.as_str()), ("user_error", "it broke"));
    let raw = call_result(None, answer(r#""user_error": "not json""#).as_bytes(), window());
    assert_eq!(raw.unwrap().output.unwrap_err().message, "not json");

    // Whole answers of other statuses fail the call, not the container.
    let failed = |http: Option<u16>, body: &[u8]| call_result(http, body, window()).unwrap().output.unwrap_err();
    let platform = failed(Some(500), br#"{"platform_error": "bad args", "was_cold": false}"#);
    assert_eq!(platform.kind, "platform_error");
    assert!(platform.message.contains("reports a platform error: \"bad args\""), "{platform:?}");
    assert_eq!(failed(None, br#"{"platform_error": "no"}"#).kind, "platform_error");
    let html = failed(Some(500), b"<html>Internal Server Error</html>");
    assert_eq!(html.kind, "server_error");
    assert!(html.message.contains("answered HTTP 500: \"<html>Internal Server Error</html>\""), "{html:?}");
    let teapot = failed(Some(418), b"short and stout");
    assert!(teapot.message.contains("HTTP 418"), "{teapot:?}");
    let neither = call_result(Some(200), answer(r#""x": 1"#).as_bytes(), window());
    assert!(protocol_message(neither).contains("without the one of user_result and user_error"));
    let swapped = call_result(Some(200), answer(r#""user_error": "\"e\"""#).as_bytes(), window());
    assert!(protocol_message(swapped).contains("with HTTP 200"));
    let not_json = call_result(Some(200), answer(r#""user_result": "{nope""#).as_bytes(), window());
    assert!(protocol_message(not_json).contains("user_result that is not JSON"));
    let garbage = call_result(Some(200), b"\x00\xffgarbage", window());
    assert!(protocol_message(garbage).contains("not JSON"));
    let huge = format!(r#"{{"user_result": "\"{}\""}}"#, "x".repeat(iluvatar_rpc::MAX_PAYLOAD_BYTES));
    assert!(matches!(
        call_result(Some(200), huge.as_bytes(), window()),
        Err(AgentFailure::Protocol(Protocol::TooLarge))
    ));
}

#[test]
fn status_answers() {
    assert!(matches!(status_of(Some(200), br#"{"Status": "OK"}"#), Ok(Status::Ready)));
    assert!(matches!(status_of(None, br#"{"Status": "OK"}"#), Ok(Status::Ready)));
    let import = br#"{"Status": "code import error", "user_error": "Traceback: SyntaxError"}"#;
    assert!(matches!(status_of(Some(500), import), Ok(Status::ImportError(e)) if e.contains("SyntaxError")));
    assert!(status_of(Some(404), b"no").is_err());
    assert!(status_of(Some(200), br#"{"Status": "maybe"}"#).is_err());
}

/// A peer on loopback that reads one request (up to the end of its head, plus its
/// Content-Length) and writes `reply` for each, then closes; returns what it was sent.
fn scripted(replies: Vec<Vec<u8>>) -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        for reply in replies {
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).unwrap_or(0) == 0 {
                    return seen;
                }
                req.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&req).to_string();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map(|n| n.trim().parse::<usize>().unwrap())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).unwrap();
            seen.push(format!("{head}{}", String::from_utf8_lossy(&body)));
            let _ = s.write_all(&reply);
        }
        seen
    });
    (addr, peer)
}

async fn connect(addr: std::net::SocketAddr) -> HttpConnection {
    HttpConnection::new(TcpStream::connect(addr).await.unwrap())
}

#[tokio::test]
async fn http_keeps_the_connection_and_reads_every_framing() {
    let body = answer(r#""user_result": "1""#);
    let replies = vec![
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"Status\":\"OK\"}".to_vec(),
        format!("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes(),
        format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{}\r\n{:x}\r\n{}\r\n0\r\nX-Trailer: t\r\n\r\n",
            &body[..5],
            body.len() - 5,
            &body[5..]
        )
        .into_bytes(),
        format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes(),
    ];
    let (addr, peer) = scripted(replies);
    let mut c = connect(addr).await;
    assert!(matches!(c.status().await, Ok(Status::Ready)));
    assert!(c.reusable());
    for _ in 0..2 {
        let (code, got) = c.invoke(r#"{"n": 1}"#).await.unwrap();
        assert_eq!((code, got), (200, body.as_bytes()));
        assert!(c.reusable());
    }
    let (code, got) = c.invoke("{}").await.unwrap();
    assert_eq!((code, got), (200, body.as_bytes()));
    assert!(!c.reusable(), "the server said it closes");
    let seen = peer.join().unwrap();
    assert!(seen[0].starts_with("GET / HTTP/1.1\r\n"), "{seen:?}");
    assert!(seen[1].starts_with("POST /invoke HTTP/1.1\r\n"), "{seen:?}");
    assert!(seen[1].contains("Content-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"n\": 1}"), "{seen:?}");
}

#[tokio::test]
async fn http_1_0_without_length_reads_to_the_end_and_closes() {
    let body = answer(r#""user_result": "2""#);
    let (addr, peer) = scripted(vec![format!("HTTP/1.0 200 OK\r\n\r\n{body}").into_bytes()]);
    let mut c = connect(addr).await;
    // The peer closes the connection after its answer: the body ends there.
    let (code, got) = c.invoke("{}").await.unwrap();
    assert_eq!((code, got), (200, body.as_bytes()));
    assert!(!c.reusable());
    peer.join().unwrap();
}

async fn failure(reply: Vec<u8>) -> AgentFailure {
    let (addr, peer) = scripted(vec![reply]);
    let mut c = connect(addr).await;
    let r = c.invoke("{}").await.map(|(code, _)| code);
    drop(c);
    let _ = peer.join();
    r.expect_err("a hostile answer must fail")
}

#[tokio::test]
async fn hostile_http_answers_are_bounded_and_named() {
    let msg = |f: AgentFailure| f.to_string();
    assert!(msg(failure(b"SPAM SPAM SPAM\r\n\r\n".to_vec()).await).contains("not HTTP/1.x"));
    assert!(msg(failure(b"HTTP/1.1 2000 OK\r\n\r\n".to_vec()).await).contains("not HTTP/1.x"));
    assert!(msg(failure(b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n".to_vec()).await).contains("without a colon"));
    let e = failure(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n".to_vec()).await;
    assert!(msg(e).contains("two different Content-Length"));
    let e = failure(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec()).await;
    assert!(msg(e).contains("only chunked"));
    let e = failure(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n".to_vec()).await;
    assert!(msg(e).contains("Content-Length \"-1\""));
    let e = failure(b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec()).await;
    assert!(msg(e).contains("switched protocols"));
    let e = failure(b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1)).await;
    assert!(msg(e).contains("interim"));
    // A head without end: refused at the cap, not buffered without end.
    let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
    endless.extend(
        b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(400),
    );
    assert!(msg(failure(endless).await).contains(&format!("head over {MAX_HEAD_BYTES} bytes")));
    // A length past the cap is refused before its body is read.
    let e = failure(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY_BYTES + 1).into_bytes()).await;
    assert!(matches!(e, AgentFailure::Protocol(Protocol::TooLarge)), "{e:?}");
    let chunk = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", MAX_BODY_BYTES + 1);
    assert!(matches!(failure(chunk.into_bytes()).await, AgentFailure::Protocol(Protocol::TooLarge)));
    let e = failure(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec()).await;
    assert!(msg(e).contains("chunk size that is not a number"));
    // Closed early: a hang-up, not a protocol error.
    let e = failure(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec()).await;
    assert!(matches!(e, AgentFailure::Closed(Closed::ServerHangup(_))), "{e:?}");
    let e = failure(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec()).await;
    assert!(matches!(e, AgentFailure::Closed(_)), "{e:?}");
    let e = failure(Vec::new()).await;
    assert!(msg(e).contains("function server closed the connection"));
}

#[tokio::test]
async fn the_socket_variant_frames_commands_and_answers() {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let body = answer(r#""user_result": "[1, 2]""#);
    let body2 = body.clone();
    let peer = std::thread::spawn(move || {
        let mut s = theirs;
        let mut seen = Vec::new();
        for reply in [br#"{"Status": "OK"}"#.to_vec(), body2.into_bytes(), u64::MAX.to_ne_bytes().to_vec()] {
            let mut head = [0u8; 16];
            s.read_exact(&mut head).unwrap();
            let cmd = u64::from_ne_bytes(head[..8].try_into().unwrap());
            let len = u64::from_ne_bytes(head[8..].try_into().unwrap());
            let mut args = vec![0u8; len as usize];
            s.read_exact(&mut args).unwrap();
            seen.push((cmd, String::from_utf8(args).unwrap()));
            if reply.len() == 8 {
                s.write_all(&reply).unwrap(); // A length, and nothing after it.
            } else {
                s.write_all(&(reply.len() as u64).to_ne_bytes()).unwrap();
                s.write_all(&reply).unwrap();
            }
        }
        seen
    });
    ours.set_nonblocking(true).unwrap();
    let mut c = SocketConnection::new(UnixStream::from_std(ours).unwrap());
    assert!(matches!(c.status().await, Ok(Status::Ready)));
    let got = c.invoke(r#"{"a": 1}"#).await.unwrap().to_vec();
    assert_eq!(got, body.as_bytes());
    let r = call_result(None, &got, window()).unwrap();
    assert_eq!(r.output.unwrap(), "[1, 2]");
    let e = c.invoke("{}").await.map(|b| b.len()).unwrap_err();
    assert!(matches!(e, AgentFailure::Protocol(Protocol::TooLarge)), "{e:?}");
    assert_eq!(peer.join().unwrap(), vec![(0, String::new()), (1, r#"{"a": 1}"#.into()), (1, "{}".into())]);
}
