//! A simulated cluster registering functions where it first sends them gives the rows of
//! one registering every function on every worker first, byte for byte.

use super::*;
use crate::sending::target::requests;
use crate::simulation::worker::{runtime, worker_config};
use crate::workload::generate::{SyntheticArgs, synthetic_workload};
use iluvatar_core::policy::BalancerConfig;

const SEED: u64 = 5;

/// Runs `arrivals` on `workers` simulated workers behind `balancer`; the rows written.
fn rows(balancer: &BalancerConfig, workers: usize, everywhere: bool, dir: &Path) -> Vec<u8> {
    let a = SyntheticArgs {
        functions: 30,
        duration_s: 120.0,
        mean_rate: 1.0,
        rate_sigma: 2.0,
        mean_warm_ms: 50.0,
        warm_sigma: 1.0,
        mean_cold_extra_ms: 300.0,
        cold_sigma: 0.5,
        mem_mb: vec![128, 256, 512],
        timer_fraction: 0.3,
        seed: SEED,
        out: dir.to_path_buf(),
        force: false,
    };
    let (meta, mut arrivals) = synthetic_workload(&a).unwrap();
    arrivals.sort_by(|a, b| a.time_ms.total_cmp(&b.time_ms).then(a.func.cmp(&b.func)));
    let plans = crate::simulation::sim_bench::simulation_target().unwrap().plans(&meta).unwrap();
    // A simulation refuses the live default concurrency (0: the machine's cores).
    let mut config = worker_config(None, &[("invoker.concurrency".into(), "2".into())]).unwrap();
    config.container_pool.memory_mb = 2048;
    config.limits.max_cpus = 2;
    let path = dir.join(format!("rows-{everywhere}.csv"));
    runtime().unwrap().block_on(async {
        let specs = Default::default();
        let built: Vec<SimWorker> =
            (0..workers).map(|i| SimWorker::build(config.clone(), i as u64, &specs).unwrap()).collect();
        let names: Vec<String> = (0..workers).map(|i| format!("w-{i}")).collect();
        let ids: Vec<(String, u32)> = names.iter().map(|n| (n.clone(), 2)).collect();
        let chooser = Arc::new(Balanced::new(balancer, SEED, &ids));
        let mut transport = InProcess::cluster(built.iter().map(|w| w.api.clone()).collect(), names, chooser);
        if everywhere {
            transport = transport.registering_everywhere();
        }
        register_all(&transport, &plans).await.unwrap();
        let recorder = Recorder::create(&path, &meta, "1", TID, arrivals.len()).unwrap();
        let clock = built[0].clock.clone();
        let r = run_virtual(&transport, clock, requests(&plans), Arc::new(arrivals), TID.into(), recorder).await;
        r.unwrap().finish().unwrap();
        let registered: usize =
            built.iter().map(|w| w.api.list_registered_funcs(Default::default()).functions.len()).sum();
        if everywhere {
            assert_eq!(registered, workers * plans.len(), "seed {SEED}: every worker holds every function");
        } else {
            assert!(registered < workers * plans.len(), "seed {SEED}: {registered} registrations: not everywhere");
        }
    });
    std::fs::read(&path).unwrap()
}

#[test]
fn registering_where_first_sent_gives_the_rows_of_registering_everywhere_first() {
    println!("seed {SEED}");
    let dir = std::env::temp_dir().join(format!("iluvatar-cluster-lazy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for balancer in [BalancerConfig::ChBl { vnodes: 100, load_factor: 1.25 }, BalancerConfig::RoundRobin] {
        let (lazy, everywhere) = (rows(&balancer, 12, false, &dir), rows(&balancer, 12, true, &dir));
        assert!(lazy.len() > 1000, "seed {SEED}: rows expected");
        assert!(lazy == everywhere, "seed {SEED}, {}: the rows differ", balancer.name());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
