//! The transaction id reaches every hop of an invocation through spans: API, queue, pool,
//! backend create and call (the agent's span is the runtime backend's, in its e2e tests).

use super::WorkerApi;
use crate::config::WorkerConfig;
use crate::env::{QuietHost, TokioClock};
use crate::isolation::BackendConfig;
use iluvatar_core::Env;
use iluvatar_rpc as rpc;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn every_hop_of_an_invocation_carries_its_tid() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let state = std::env::temp_dir().join(format!("iluvatar-spans-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let mut config = WorkerConfig { state_dir: state.clone(), ..Default::default() };
    config.isolation.backends = vec![BackendConfig::Sim(Default::default())];
    let env = Env::new(Arc::new(TokioClock::starting_at(0)), 1);
    let api = WorkerApi::build(config, env, Arc::new(QuietHost)).unwrap();
    let reg = rpc::RegisterRequest {
        function_name: "f".into(),
        function_version: "1".into(),
        image_name: "sim".into(),
        memory: 128,
        cpus: 1,
        language: rpc::LanguageRuntime::Python3 as i32,
        transaction_id: "tid-register".into(),
        ..Default::default()
    };
    assert!(api.register(reg).await.success);
    let req = rpc::InvokeRequest {
        function_name: "f".into(),
        function_version: "1".into(),
        json_args: "{}".into(),
        transaction_id: "tid-span-7".into(),
    };
    assert!(api.invoke(req).await.success);
    api.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for hop in ["invoke{", "queue{", "acquire", "create{", "call{"] {
        let line = text.lines().find(|l| l.contains(hop) && l.contains("close"));
        let line = line.unwrap_or_else(|| panic!("no span {hop} closed:\n{text}"));
        assert!(line.contains("tid=tid-span-7"), "span {hop} without the tid: {line}");
    }
    assert!(text.contains("register{tid=tid-register}: iluvatar_worker::api: registered fqdn"), "{text}");
}
